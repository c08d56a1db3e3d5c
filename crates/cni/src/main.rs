//! `wyvern-cni`: the CNI plugin binary. It reads the environment and stdin, lets
//! [`cni::run`] do the work, prints the answer on stdout and exits non-zero on an error (whose
//! document is that answer). See the library's documentation for what it does.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut input = Vec::new();
    let stdin = std::io::stdin().read_to_end(&mut input).map(|_| input);
    let var = |name: &str| std::env::var(name).ok();
    let outcome = cni::run(&var, stdin);
    print!("{}", outcome.stdout);
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
