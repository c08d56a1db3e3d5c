//! `testbed-cleanup [PREFIX]`: removes namespaces, links, run directories and OVS processes
//! left behind by the test bed (default prefix `wyt`), listing each one it removes.

fn main() {
    let prefix = std::env::args()
        .nth(1)
        .unwrap_or_else(|| testbed::PREFIX.to_owned());
    for l in testbed::leftovers::cleanup(&prefix) {
        println!("removed {l}");
    }
    let rest = testbed::leftovers::find(&prefix);
    for l in &rest {
        println!("still there: {l}");
    }
    if !rest.is_empty() {
        std::process::exit(1);
    }
}
