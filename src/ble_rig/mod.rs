//! A simulated Bluetooth world for tests and the demo: a private D-Bus daemon and a simulated
//! BlueZ on it with as many adapters as asked for, each able to see the others.
//!
//! Nothing touches the machine's own system bus: every process that should use the simulated
//! BlueZ gets `DBUS_SYSTEM_BUS_ADDRESS` (see [`BleRig::bus_address`]), which libdbus, and so
//! btleplug and bluer, read. The simulated BlueZ is the Python package `bluezoo` (pinned to
//! 1.0.2) with the reconnect fixes in `simulated_bluez.py`; `dbus-daemon` comes from Debian's
//! `dbus-daemon` package. [`BleRig::start`] says which is missing and how to install it.
//!
//! Adapter `hciN` has the address [`adapter_address`]`(N)`. Dropping the rig stops both
//! processes.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The simulated BlueZ, with its reconnect fixes.
const SIMULATED_BLUEZ: &str = include_str!("simulated_bluez.py");

/// How long the daemon and the simulated BlueZ may take to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable libdbus reads for the system bus.
pub const SYSTEM_BUS_ENV: &str = "DBUS_SYSTEM_BUS_ADDRESS";

/// The address of adapter `hci{index}`.
pub fn adapter_address(index: usize) -> String {
    format!(
        "00:00:00:00:{:02X}:{:02X}",
        (index + 1) >> 8,
        (index + 1) & 0xFF
    )
}

/// Why the rig could not start.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    /// A program it needs is missing.
    #[error("{program} is not installed ({install})")]
    Missing {
        /// What is missing.
        program: &'static str,
        /// How to install it.
        install: &'static str,
    },
    /// Something failed while starting.
    #[error("{what}: {detail}")]
    Start {
        /// The step.
        what: &'static str,
        /// What went wrong (including the process's own words).
        detail: String,
    },
}

/// The running daemon and simulated BlueZ.
#[derive(Debug)]
pub struct BleRig {
    dbus: Child,
    bluez: Child,
    address: String,
    adapters: usize,
    dir: tempfile::TempDir,
}

impl BleRig {
    /// Starts a private bus and a simulated BlueZ with `adapters` adapters (hci0 …).
    pub fn start(adapters: usize) -> Result<BleRig, RigError> {
        let dir = tempfile::Builder::new()
            .prefix("vigil-ble-")
            .tempdir()
            .map_err(|e| start_err("temporary directory", e))?;
        let mut dbus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!(
                "--address=unix:path={}",
                dir.path().join("bus").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => RigError::Missing {
                    program: "dbus-daemon",
                    install: "apt-get install dbus-daemon",
                },
                _ => start_err("starting dbus-daemon", e),
            })?;
        let address = match read_line(dbus.stdout.take(), START_TIMEOUT) {
            Some(line) if line.starts_with("unix:") => line,
            other => {
                let _ = dbus.kill();
                let _ = dbus.wait();
                return Err(RigError::Start {
                    what: "dbus-daemon printed no address",
                    detail: format!("{other:?}"),
                });
            }
        };
        let script = dir.path().join("simulated_bluez.py");
        std::fs::write(&script, SIMULATED_BLUEZ).map_err(|e| start_err("writing the script", e))?;
        let bluez = start_bluez(&script, &address, adapters, dir.path());
        let bluez = match bluez {
            Ok(b) => b,
            Err(e) => {
                let _ = dbus.kill();
                let _ = dbus.wait();
                return Err(e);
            }
        };
        Ok(BleRig {
            dbus,
            bluez,
            address,
            adapters,
            dir,
        })
    }

    /// The private bus, for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub fn bus_address(&self) -> &str {
        &self.address
    }

    /// How many adapters there are.
    pub fn adapters(&self) -> usize {
        self.adapters
    }

    /// Where the simulated BlueZ's log goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("bluez.log")
    }

    /// A command with the rig's bus in its environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env(SYSTEM_BUS_ENV, &self.address);
        c
    }
}

impl Drop for BleRig {
    fn drop(&mut self) {
        for child in [&mut self.bluez, &mut self.dbus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_err(what: &'static str, e: impl std::fmt::Display) -> RigError {
    RigError::Start {
        what,
        detail: e.to_string(),
    }
}

fn start_bluez(script: &Path, bus: &str, adapters: usize, dir: &Path) -> Result<Child, RigError> {
    let missing = RigError::Missing {
        program: "bluezoo",
        install: "pip install bluezoo==1.0.2",
    };
    let probe = Command::new("python3")
        .args(["-c", "import bluezoo"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RigError::Missing {
                program: "python3",
                install: "apt-get install python3",
            },
            _ => start_err("running python3", e),
        })?;
    if !probe.success() {
        return Err(missing);
    }
    let log = std::fs::File::create(dir.join("bluez.log")).map_err(|e| start_err("log file", e))?;
    let mut child = Command::new("python3")
        .arg(script)
        .args((0..adapters).map(adapter_address))
        .env(SYSTEM_BUS_ENV, bus)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| start_err("starting the simulated BlueZ", e))?;
    match read_line(child.stdout.take(), START_TIMEOUT) {
        Some(line) if line == "bluez: ready" => Ok(child),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            let mut log = String::new();
            if let Ok(mut f) = std::fs::File::open(dir.join("bluez.log")) {
                let _ = f.read_to_string(&mut log);
            }
            Err(RigError::Start {
                what: "the simulated BlueZ did not come up",
                detail: format!("said {other:?}; log: {}", log.trim()),
            })
        }
    }
}

/// The first line a child prints, within `timeout`. The rest of its output is drained in the
/// background so it never blocks on a full pipe.
fn read_line(stdout: Option<std::process::ChildStdout>, timeout: Duration) -> Option<String> {
    let stdout = stdout?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        let _ = tx.send(first);
        for _ in lines {}
    });
    rx.recv_timeout(timeout)
        .ok()
        .flatten()
        .map(|l| l.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapters_have_distinct_addresses() {
        assert_eq!(adapter_address(0), "00:00:00:00:00:01");
        assert_eq!(adapter_address(1), "00:00:00:00:00:02");
        assert_eq!(adapter_address(255), "00:00:00:00:01:00");
    }
}
