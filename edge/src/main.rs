//! `vigil-edge`: the room appliance's command line.
//!
//! `vigil-edge run --config edge.toml` starts the recorder and the local API and prints
//! `edge api: URL` on standard output once it listens (`https://…` with `[http_tls]`). `vigil-edge decode 2a37 16 48 00 04`
//! decodes one GATT characteristic value and prints it as JSON, with no configuration: a bench
//! tool for checking what a monitor sends.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::time::Duration;
use vigil_edge::app::Appliance;
use vigil_edge::config::EdgeConfig;

use vigil_hardware::ble::collector;
use vigil_hardware::ble::simulated::{self, SimMonitor, SimulateOptions};
use vigil_hardware::gatt::{self, Characteristic};
use vigil_hardware::sim::Scenario;

#[derive(Debug, Parser)]
#[command(name = "vigil-edge", version, about = "Vigil room appliance")]
struct Cli {
    /// Log as JSON lines instead of readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Record sessions and serve the local API.
    Run {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and print it as understood.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Decode one GATT characteristic value and print it as JSON (needs no configuration).
    Decode {
        /// The characteristic: a UUID (2a37, 0x2A37, 00002a37-0000-1000-8000-00805f9b34fb,
        /// FB005C82-02E7-F387-1CAD-8ACD2D8DF0C8) or a name (heart_rate, plx_continuous, ...).
        characteristic: String,
        /// The value in hex, with or without spaces: `16 48 00 04` or `16480004`.
        #[arg(required = true, num_args = 1..)]
        hex: Vec<String>,
    },
    /// Enrol this appliance with the code `vigil-cloud enrol` printed: a key made here, a
    /// certificate from the cloud the code names, and the `[cloud]` section written into the
    /// configuration file. Then start (or restart) the appliance.
    Enrol {
        /// The code, as printed (quote it).
        code: String,
        /// The configuration file to complete.
        #[arg(long, short, default_value = "/etc/vigil/edge.toml")]
        config: PathBuf,
    },
    /// Bluetooth monitors: list the ones in range, or run a simulated one.
    Devices {
        #[command(subcommand)]
        command: Devices,
    },
}

#[derive(Debug, Subcommand)]
enum Devices {
    /// Scan and list the devices in range, health monitors first, with what they measure;
    /// copy an address into a `[[source.monitor]]` table to assign a monitor to the room.
    Scan {
        /// The adapter to scan with (`hci0`); the first one when absent.
        #[arg(long)]
        adapter: Option<String>,
        /// How long to scan, seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Run one simulated monitor as a BLE peripheral (a GATT application and an
    /// advertisement on the adapter), fed by the physiology simulator, until stopped.
    Simulate {
        /// Which monitor: hr-strap, oximeter, bp-cuff or thermometer.
        monitor: String,
        /// The adapter to register on (`hci1`); BlueZ's default when absent.
        #[arg(long)]
        adapter: Option<String>,
        /// The name to advertise (default: "Vigil " and the monitor).
        #[arg(long)]
        name: Option<String>,
        /// The virtual patient's seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The scenario: baseline, hypertension, desaturation, sensor_off, disconnect.
        #[arg(long, default_value = "baseline")]
        scenario: String,
        /// Seconds between cuff readings (30 to 3600).
        #[arg(long, default_value_t = 180)]
        nibp_interval_s: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    vigil_edge::init_logging(cli.log_json);
    match cli.command {
        Command::Run { config } => {
            let config = EdgeConfig::load(&config)?;
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(run(config))
        }
        Command::Enrol { code, config } => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            match runtime.block_on(enrol(&code, &config)) {
                Ok(()) => Ok(()),
                Err(e) => {
                    eprintln!("enrolment refused: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::CheckConfig { config } => {
            let config = EdgeConfig::load(&config)?;
            println!("{config:#?}");
            Ok(())
        }
        Command::Devices { command } => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(devices(command))
        }
        Command::Decode {
            characteristic,
            hex,
        } => match decode_to_json(&characteristic, &hex) {
            Ok(json) => {
                println!("{json}");
                Ok(())
            }
            Err(e) => {
                // The message is for a person at a bench: what was wrong, without the
                // backtrace anyhow adds when RUST_BACKTRACE is set.
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
        },
    }
}

/// The `enrol` command.
async fn enrol(code: &str, config: &std::path::Path) -> Result<(), vigil_edge::enrol::EnrolError> {
    use vigil_edge::enrol;
    let code = vigil_shared::fleet::EnrolCode::parse(code)?;
    println!("enrolling with cloud: {}", code.addr);
    let software = format!("vigil-edge {}", env!("CARGO_PKG_VERSION"));
    let got = enrol::request_certificate(&code, &software).await?;
    let credentials = enrol::install(config, &code, &got)?;
    println!("enrolled site: {}", got.site);
    println!("enrolled room: {}", got.room);
    println!("certificate: {}", credentials.display());
    println!("configuration: {}", config.display());
    println!("next: systemctl enable --now vigil-edge (or restart it if it runs)");
    Ok(())
}

/// The `decode` command: characteristic and hex in, pretty JSON out, or an error saying which
/// argument is wrong or which field of the value could not be read.
fn decode_to_json(characteristic: &str, hex: &[String]) -> anyhow::Result<String> {
    let c = Characteristic::parse(characteristic).ok_or_else(|| {
        let known: Vec<String> = Characteristic::ALL.iter().map(|c| c.to_string()).collect();
        anyhow::anyhow!(
            "unknown characteristic {characteristic:?}: give a UUID (2a37, 0x2A37 or \
             00002a37-0000-1000-8000-00805f9b34fb) or a name; known: {}",
            known.join(", ")
        )
    })?;
    let bytes = parse_hex(hex).map_err(|e| anyhow::anyhow!("bad hex value: {e}"))?;
    let measurement = gatt::decode(c, &bytes).map_err(|e| {
        anyhow::anyhow!(
            "cannot decode {c} value [{}] ({} bytes): {e}",
            spaced_hex(&bytes),
            bytes.len()
        )
    })?;
    serde_json::to_string_pretty(&measurement).context("cannot print the decoded value as JSON")
}

/// Why a hex argument could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum HexError {
    /// A character that is not a hex digit.
    #[error("{found:?} at position {position} of argument {argument} is not a hex digit")]
    NotHex {
        /// 1-based argument number.
        argument: usize,
        /// 1-based character position within the argument.
        position: usize,
        /// The character.
        found: char,
    },
    /// The digits do not pair up into bytes.
    #[error("{digits} hex digits do not make whole bytes (two digits each)")]
    OddDigits {
        /// How many digits there were in all.
        digits: usize,
    },
}

/// Joins hex arguments into bytes. Whitespace is ignored anywhere, and each argument may start
/// with `0x`, so `16 48 0004`, `"16 48 00 04"` and `0x16480004` are the same value. Bytes may
/// span arguments (`1 6 48` is `16 48`): only the digit count as a whole must be even.
fn parse_hex(args: &[String]) -> Result<Vec<u8>, HexError> {
    let mut nibbles: Vec<u8> = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let trimmed = arg.trim_start();
        let body = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        let skipped = arg.chars().count() - body.chars().count();
        for (j, ch) in body.chars().enumerate() {
            if ch.is_whitespace() {
                continue;
            }
            let digit = ch.to_digit(16).ok_or(HexError::NotHex {
                argument: i + 1,
                position: skipped + j + 1,
                found: ch,
            })?;
            // to_digit(16) is below 16, so the cast keeps every bit.
            nibbles.push(digit as u8);
        }
    }
    if !nibbles.len().is_multiple_of(2) {
        return Err(HexError::OddDigits {
            digits: nibbles.len(),
        });
    }
    Ok(nibbles
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => (hi << 4) | lo,
            _ => 0, // chunks_exact(2) yields pairs only
        })
        .collect())
}

/// Bytes as `16 48 00 04`, for error messages.
fn spaced_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(config: EdgeConfig) -> anyhow::Result<()> {
    let appliance = Appliance::start(config).await?;
    println!("edge api: {}", appliance.api_url());
    println!("edge api token: {}", appliance.api_token);
    println!("edge db: {}", appliance.db_path.display());
    if let Some(addr) = appliance.peer_addr {
        println!("edge peers: {addr}");
    }
    vigil_web::service::ready(&format!(
        "recording; room screen at {}",
        appliance.api_url()
    ));
    let watchdog = {
        let clock = appliance.recorder_clock();
        let mut last = i64::MIN;
        vigil_web::service::spawn_watchdog(move || {
            let now = clock();
            let moved = now > last;
            last = now;
            moved
        })
    };
    wait_for_signal().await?;
    tracing::info!("stopping");
    vigil_web::service::stopping();
    if let Some(w) = watchdog {
        w.abort();
    }
    appliance.shutdown().await;
    Ok(())
}

async fn devices(command: Devices) -> anyhow::Result<()> {
    match command {
        Devices::Scan { adapter, seconds } => {
            let seen = collector::scan(adapter.as_deref(), Duration::from_secs(seconds)).await?;
            if seen.is_empty() {
                println!("no devices seen in {seconds} s");
            }
            for d in seen {
                let measures: Vec<&str> = d.measures.iter().map(|m| m.label()).collect();
                println!(
                    "{}  {:<24}  {}",
                    d.address,
                    d.name.as_deref().unwrap_or("(no name)"),
                    if measures.is_empty() {
                        "no health service advertised".to_owned()
                    } else {
                        measures.join(", ")
                    }
                );
            }
            Ok(())
        }
        Devices::Simulate {
            monitor,
            adapter,
            name,
            seed,
            scenario,
            nibp_interval_s,
        } => {
            let m = SimMonitor::parse(&monitor).ok_or_else(|| {
                let known: Vec<&str> = SimMonitor::ALL.iter().map(|m| m.device()).collect();
                anyhow::anyhow!("unknown monitor {monitor:?}; known: {}", known.join(", "))
            })?;
            let scenario: Scenario = scenario.parse()?;
            let opts = SimulateOptions {
                monitor: m,
                adapter,
                name: name.unwrap_or_else(|| format!("Vigil {}", m.device())),
                seed,
                scenario,
                nibp_interval_s,
            };
            let running = simulated::start(&opts)
                .await
                .with_context(|| format!("cannot register the simulated {}", m.device()))?;
            println!("monitor: {}", opts.name);
            println!("adapter: {}", running.adapter);
            println!("address: {}", running.address);
            wait_for_signal().await?;
            drop(running);
            Ok(())
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| (*s).to_owned()).collect()
    }

    fn check(parts: &[&str], expected: Result<Vec<u8>, HexError>) {
        assert_eq!(parse_hex(&args(parts)), expected, "{parts:?}");
    }

    #[test]
    fn hex_with_or_without_spaces() {
        let value = vec![0x16, 0x48, 0x00, 0x04];
        check(&["16", "48", "00", "04"], Ok(value.clone()));
        check(&["16480004"], Ok(value.clone()));
        check(&["1648", "0004"], Ok(value.clone()));
        check(&["16 48 00 04"], Ok(value.clone()));
        check(&["0x16480004"], Ok(value.clone()));
        check(&["0X16", "0x48", "0004"], Ok(value.clone()));
        check(&["1", "6480004"], Ok(value));
        check(&["aB", "Cd"], Ok(vec![0xAB, 0xCD]));
        check(&[""], Ok(vec![]));
        check(
            &["16", "4g"],
            Err(HexError::NotHex {
                argument: 2,
                position: 2,
                found: 'g',
            }),
        );
        check(
            &["0x1z"],
            Err(HexError::NotHex {
                argument: 1,
                position: 4,
                found: 'z',
            }),
        );
        check(
            &["16:48"],
            Err(HexError::NotHex {
                argument: 1,
                position: 3,
                found: ':',
            }),
        );
        check(&["164"], Err(HexError::OddDigits { digits: 3 }));
        check(&["16", "4", "8"], Ok(vec![0x16, 0x48]));
    }

    #[test]
    fn decode_command_output_and_errors() {
        let json = decode_to_json("2A37", &args(&["16480004"])).map_err(|e| e.to_string());
        let value: serde_json::Value =
            serde_json::from_str(&json.unwrap_or_default()).unwrap_or_default();
        assert_eq!(value["characteristic"], "heart_rate");
        assert_eq!(value["heart_rate_bpm"], 72);
        assert_eq!(value["rr_intervals_1024th_s"], serde_json::json!([1024]));

        let err = |c: &str, hex: &[&str]| {
            decode_to_json(c, &args(hex))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("2a99", &["00"]).starts_with("unknown characteristic \"2a99\""));
        assert!(err("2a99", &["00"]).contains("heart_rate (0x2A37)"));
        assert_eq!(
            err("2a37", &["16", "4x"]),
            "bad hex value: 'x' at position 2 of argument 2 is not a hex digit"
        );
        assert_eq!(
            err("2a37", &["16", "48", "00", "10", "04"]),
            "cannot decode heart_rate (0x2A37) value [16 48 00 10 04] (5 bytes): rr intervals at \
             byte 2: an odd number of bytes is left for 16-bit intervals"
        );
    }
}
