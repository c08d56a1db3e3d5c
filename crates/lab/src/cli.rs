//! The `wyvern lab` subcommands.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use crate::{Error, Lab, LabOptions, Result, Topology, names};

/// `wyvern lab ...`.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Bring a lab up from a topology file, or in line with it if it runs already.
    Up {
        /// The topology file (TOML; see examples/demo.toml).
        file: PathBuf,
    },
    /// Show what runs: etcd members and servers (up or DOWN), chassis, agents, physical
    /// segments, external hosts, networks, routers, VMs with IP and MAC, floating IPs.
    Status {
        /// The lab (default: every lab).
        name: Option<String>,
    },
    /// Run a command in the namespace of a VM or an external host (or of a chassis or a physical
    /// segment, with OVS_RUNDIR set).
    Exec {
        /// The lab (default: the only one).
        #[arg(long)]
        lab: Option<String>,
        /// VM, external host, chassis or physical segment name.
        host: String,
        /// The command, after `--`.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Kill an etcd member (`etcd-N`) or a server (`server-N`) with SIGKILL, like a crash.
    Stop {
        /// The lab (default: the only one).
        #[arg(long)]
        lab: Option<String>,
        /// `etcd-N` or `server-N` (as `status` lists them).
        name: String,
    },
    /// Start a stopped etcd member or server again, on its ports and data.
    Start {
        /// The lab (default: the only one).
        #[arg(long)]
        lab: Option<String>,
        /// `etcd-N` or `server-N` (as `status` lists them).
        name: String,
    },
    /// Stop every process of a lab and delete its namespaces and files.
    Down {
        /// The lab (default: the only one).
        name: Option<String>,
    },
}

/// The lab meant when none is named: the only one there is.
fn only_lab(name: Option<String>) -> Result<String> {
    if let Some(n) = name {
        return Ok(n);
    }
    match names::labs().as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::NotFound("no lab is up".into())),
        many => Err(Error::NotFound(format!(
            "several labs are up ({}); name one",
            many.join(", ")
        ))),
    }
}

/// Runs `act` on lab `name` (default: the only one), which keeps running afterwards.
fn with_lab(name: Option<String>, act: impl FnOnce(&mut Lab) -> Result<()>) -> Result<()> {
    let name = only_lab(name)?;
    // Only a lab that exists (it has a state file): opening makes the state directory.
    crate::status(&name)?;
    let mut lab = Lab::open(&name, &LabOptions::default())?;
    let r = act(&mut lab);
    lab.keep();
    r
}

/// Runs a `wyvern lab` subcommand. `exec` ends the process with the command's exit code.
pub fn run(cmd: LabCommand) -> Result<()> {
    match cmd {
        LabCommand::Up { file } => {
            let topo = Topology::from_file(&file)?;
            let mut lab = Lab::open(&topo.name, &LabOptions::default())?;
            let r = lab.converge(&topo);
            lab.keep();
            if r.is_err() {
                eprintln!(
                    "[lab {}] up failed; what was made keeps running: fix the cause and run \
                     `wyvern lab up` again, or `wyvern lab down {}`",
                    topo.name, topo.name
                );
            }
            r.map(drop)
        }
        LabCommand::Status { name } => {
            let labs = match name {
                Some(n) => vec![n],
                None => names::labs(),
            };
            if labs.is_empty() {
                println!("no lab is up");
            }
            for l in labs {
                print!("{}", crate::status(&l)?);
            }
            Ok(())
        }
        LabCommand::Exec { lab, host, cmd } => {
            let lab = only_lab(lab)?;
            let mut c = crate::exec_command(&lab, &host)?;
            let status = c.args(&cmd).status().map_err(|source| Error::Io {
                what: format!("run {cmd:?} in {host}"),
                source,
            })?;
            let code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            std::process::exit(code)
        }
        LabCommand::Stop { lab, name } => with_lab(lab, |l| l.stop(&name)),
        LabCommand::Start { lab, name } => with_lab(lab, |l| l.start(&name).map(drop)),
        LabCommand::Down { name } => crate::down(&only_lab(name)?, true).map(drop),
    }
}
