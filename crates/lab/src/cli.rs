//! The `wyvern lab` subcommands.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use crate::{Error, Lab, LabOptions, Result, State, Topology, names, output};

/// `wyvern lab ...`.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Bring a lab up from a topology file, or in line with it if it runs already (from the
    /// same file: a lab of that name that runs from another file is refused).
    Up {
        /// The topology file (TOML; see examples/demo.toml).
        file: PathBuf,
        /// Take the lab of the file's name down first, whatever file it runs from, and bring
        /// it up afresh.
        #[arg(long)]
        replace: bool,
    },
    /// Show what runs: etcd members and servers (up or DOWN), chassis, agents (with their
    /// restarts by their supervisor and how they last ended), physical
    /// segments, external hosts, networks, routers, VMs with IP and MAC (and their servers),
    /// floating IPs, load balancers with their listeners.
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
    crate::status::existing(&name)?;
    let mut lab = Lab::open(&name, &LabOptions::default())?;
    let r = act(&mut lab);
    lab.keep();
    r
}

/// `wyvern lab up FILE`: validates the file before anything starts; refuses a lab of that
/// name that runs from another file unless `replace` (which takes it down first). A failed
/// `up` removes a lab it made afresh, and leaves one that ran before as it is, saying what
/// runs and how to remove it.
fn up(file: &Path, replace: bool) -> Result<()> {
    let topo = Topology::from_file(file)?;
    let name = topo.name.as_str();
    let path = std::fs::canonicalize(file).map_err(|error| Error::Io {
        what: format!("find {}", file.display()),
        error,
    })?;
    let before = State::load(&names::state_dir(name))?;
    if let Some(running) = before.as_ref().and_then(|s| s.file.clone())
        && running != path
        && !replace
    {
        return Err(Error::OtherFile {
            lab: name.to_owned(),
            running,
            given: path,
        });
    }
    if replace {
        crate::down(name, true)?;
    }
    let mut lab = Lab::open(name, &LabOptions::default())?;
    lab.record_file(path);
    let Err(e) = lab.converge(&topo) else {
        lab.keep();
        return Ok(());
    };
    let what = if before.is_some() && !replace {
        lab.keep();
        let runs = crate::status(name).map_or_else(|e| e.to_string(), |s| s.summary());
        format!(
            "the lab keeps what it has ({runs}; `wyvern lab status {name}`): fix the cause and \
             run `wyvern lab up {}` again, or remove the lab with `wyvern lab down {name}`",
            file.display()
        )
    } else {
        // Dropping it tears the lab down.
        drop(lab);
        "everything it had started is removed".to_owned()
    };
    output::warning(format_args!("[lab {name}] up failed; {what}"));
    Err(e)
}

/// `wyvern lab status [NAME]`: every lab, or the one named. Stops quietly when the reader is
/// gone.
fn show_status(name: Option<String>) -> Result<()> {
    let Some(name) = name else {
        let labs = names::labs();
        if labs.is_empty() {
            output::show("no lab is up\n")?;
        }
        for l in labs {
            // A lab being made, or left by a crash, may have no state (yet): said, not fatal.
            let text = match crate::status(&l) {
                Ok(s) => s.to_string(),
                Err(e) => format!("lab {l}: {e}\n"),
            };
            if !output::show(&text)? {
                break;
            }
        }
        return Ok(());
    };
    output::show(&crate::status(&name)?.to_string()).map(drop)
}

/// Runs a `wyvern lab` subcommand. `exec` ends the process with the command's exit code.
pub fn run(cmd: LabCommand) -> Result<()> {
    match cmd {
        LabCommand::Up { file, replace } => up(&file, replace),
        LabCommand::Status { name } => show_status(name),
        LabCommand::Exec { lab, host, cmd } => {
            let lab = only_lab(lab)?;
            let mut c = crate::exec_command(&lab, &host)?;
            let status = c.args(&cmd).status().map_err(|error| Error::Io {
                what: format!("run {cmd:?} in {host}"),
                error,
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
