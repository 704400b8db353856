//! `vigil-cloud`: the cloud aggregator's command line. `pki …` runs the private CA, `run` starts
//! the aggregator, `user …` manages the dashboard's users and their API tokens, `staff …` the
//! people who sign in at the room screens.
//!
//! This file only parses arguments and prints results; the work is in the `vigil_cloud` library.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use vigil_cloud::pki::{
    self, Ca, CaOptions, DEFAULT_CA_NAME, DEFAULT_CA_VALIDITY_DAYS, DEFAULT_LEAF_VALIDITY_DAYS,
    IssuedCert, Serial,
};
use vigil_shared::ids::{RoomId, SiteId};

/// Vigil's cloud aggregator.
#[derive(Debug, Parser)]
#[command(name = "vigil-cloud", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the private certificate authority that appliances and the cloud trust.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Run the aggregator: sync endpoint and API.
    Run {
        /// The aggregator's configuration file.
        #[arg(long, default_value = "cloud.toml")]
        config: PathBuf,
        /// Log as JSON lines instead of readable text.
        #[arg(long)]
        log_json: bool,
    },
    /// Manage dashboard users: admins (every site), regional managers (a region's sites),
    /// clinicians (one site). Passwords are read from standard input, one line.
    User {
        /// The aggregator's configuration file (the database and the sites).
        #[arg(long, default_value = "cloud.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage the staff who sign in at a site's room screens (kept in the site's
    /// configuration document, which appliances receive when they connect).
    Staff {
        /// The aggregator's configuration file (the database).
        #[arg(long, default_value = "cloud.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: StaffCommand,
    },
    /// Make a one-time code that enrols a room's appliance: run `vigil-edge enrol CODE` on the
    /// appliance within the hour. The code names this cloud's sync address and its CA.
    Enrol {
        /// The aggregator's configuration file.
        #[arg(long, default_value = "cloud.toml")]
        config: PathBuf,
        /// The site.
        #[arg(long)]
        site: String,
        /// The room.
        #[arg(long)]
        room: String,
        /// Enrol a new appliance in place of the room's active one, which is revoked when the
        /// new one enrols.
        #[arg(long)]
        replace: bool,
    },
    /// Rebuild every projection (sessions, counts, advisories, events) from the documents.
    Reindex {
        /// The aggregator's configuration file.
        #[arg(long, default_value = "cloud.toml")]
        config: PathBuf,
    },
    /// Copy the whole database (documents, projections, users, tokens, the audit log) into a
    /// new SQLite file: one consistent moment, safe while the cloud runs.
    Backup {
        /// The aggregator's configuration file.
        #[arg(long, default_value = "cloud.toml")]
        config: PathBuf,
        /// The file to write; it must not exist.
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup file into the configured database, which must be empty (a new SQLite
    /// file or PostgreSQL database). Run it with the cloud stopped.
    Restore {
        /// The aggregator's configuration file.
        #[arg(long, default_value = "cloud.toml")]
        config: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
    /// Copy the configured (SQLite) database into an empty PostgreSQL database; then set
    /// `[store] kind = "postgres"` and restart. Appliances send again whatever arrived after
    /// the copy.
    MigrateStore {
        /// The aggregator's configuration file.
        #[arg(long, default_value = "cloud.toml")]
        config: PathBuf,
        /// The PostgreSQL database: `postgres://user:password@host:port/database`, or
        /// `@FILE` to read it from a file (keeps the password off the command line).
        #[arg(long)]
        to: String,
        /// The CA certificate of the PostgreSQL server (required unless it is on this machine).
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum StaffCommand {
    /// Set the site's infusion limits, which the room screens check orders against; fields
    /// not given keep their current value (or the default).
    Limits {
        /// The site, as in cloud.toml.
        #[arg(long)]
        site: String,
        /// Highest dose, mg/kg (default 1.0).
        #[arg(long)]
        max_dose_mg_per_kg: Option<f64>,
        /// Highest total dose, mg (default 150).
        #[arg(long)]
        max_total_mg: Option<f64>,
        /// Highest pump rate, mg/h (default 200).
        #[arg(long)]
        max_rate_mg_per_h: Option<f64>,
        /// Shortest infusion, minutes (default 20).
        #[arg(long)]
        min_minutes: Option<u64>,
        /// Longest infusion, minutes (default 120).
        #[arg(long)]
        max_minutes: Option<u64>,
    },
    /// Set the site's discharge rules, which the room screens and the appliances' API hold
    /// every discharge to; fields not given keep their current value (or the default).
    Discharge {
        /// The site, as in cloud.toml.
        #[arg(long)]
        site: String,
        /// Least observation after the dose stop, minutes, 1-120 (default 30).
        #[arg(long)]
        min_observation_min: Option<u32>,
        /// Highest CADSS after the infusion without a clinician's override (default 4).
        #[arg(long)]
        max_cadss: Option<i64>,
        /// Systolic under which a reading is acceptable whatever the baseline (default 160).
        #[arg(long)]
        bp_systolic_below: Option<i64>,
        /// Diastolic under which a reading is acceptable whatever the baseline (default 100).
        #[arg(long)]
        bp_diastolic_below: Option<i64>,
        /// How far above the baseline a reading may be, percent (default 20).
        #[arg(long)]
        bp_within_pct_of_baseline: Option<i64>,
        /// Oldest blood pressure that counts, minutes (default 10).
        #[arg(long)]
        bp_max_age_min: Option<u32>,
    },
    /// Add a staff member, or give an existing one a new name, role or PIN; the PIN (6-12
    /// digits) is read from standard input.
    Add {
        /// The site, as in cloud.toml.
        #[arg(long)]
        site: String,
        /// Staff id, a-z, 0-9, '-' (what session records show as `by`).
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// nurse, clinician or front_desk.
        #[arg(long)]
        role: String,
    },
    /// Issue an API token for a site's appliances (for an integration such as an EHR bridge);
    /// printed once, only its hash is kept. The rooms accept it once they have synced.
    IssueToken {
        /// The site, as in cloud.toml.
        #[arg(long)]
        site: String,
        /// What it is for: a-z, 0-9, '-' (shown as `token:LABEL` in the appliance's audit log).
        #[arg(long)]
        label: String,
        /// Days until it expires.
        #[arg(long, default_value_t = vigil_cloud::staff::DEFAULT_TOKEN_DAYS)]
        days: u32,
    },
    /// Revoke a site's appliance API token by its label.
    RevokeToken {
        /// The site, as in cloud.toml.
        #[arg(long)]
        site: String,
        /// The token's label.
        #[arg(long)]
        label: String,
    },
    /// List a site's appliance API tokens.
    Tokens {
        /// The site, as in cloud.toml.
        #[arg(long)]
        site: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Add {
        /// Login name: a-z, 0-9, '.', '_', '-'.
        username: String,
        /// admin, regional-manager or clinician.
        #[arg(long)]
        role: String,
        /// The region of a regional manager (as in cloud.toml's sites).
        #[arg(long)]
        region: Option<String>,
        /// The site of a clinician.
        #[arg(long)]
        site: Option<String>,
    },
    /// Set a user's password (read from standard input); signs them out everywhere.
    Passwd {
        /// The user.
        username: String,
    },
    /// Disable a user: sign-in refused, sessions ended, API tokens revoked.
    Disable {
        /// The user.
        username: String,
    },
    /// Re-enable a disabled user (their old API tokens stay revoked).
    Enable {
        /// The user.
        username: String,
    },
    /// List users.
    List,
    /// Issue an API token for a user (printed once; it sees what the user sees).
    Token {
        /// The user.
        username: String,
        /// A label to recognise the token by.
        #[arg(long, default_value = "cli")]
        label: String,
        /// Days until the token expires (1 to 365).
        #[arg(long, default_value_t = vigil_cloud::auth::DEFAULT_TOKEN_DAYS)]
        days: u32,
    },
}

#[derive(Debug, Args)]
struct DirArg {
    /// The CA's directory.
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a CA: ca.pem, ca.key (0600) and an empty crl.pem.
    Init {
        #[command(flatten)]
        dir: DirArg,
        /// The CA's common name.
        #[arg(long, default_value = DEFAULT_CA_NAME)]
        name: String,
        /// How long the CA certificate is valid.
        #[arg(long, default_value_t = DEFAULT_CA_VALIDITY_DAYS)]
        days: u32,
        /// Replace an existing CA; every certificate it issued stops being trusted.
        #[arg(long)]
        force: bool,
    },
    /// Issue the cloud's TLS server certificate.
    IssueServer {
        #[command(flatten)]
        dir: DirArg,
        /// A DNS name the cloud is reached by (repeatable).
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        /// An IP address the cloud is reached by (repeatable).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// The file names: OUT_NAME.pem and OUT_NAME.key.
        #[arg(long, default_value = "server")]
        out_name: String,
        /// How long the certificate is valid.
        #[arg(long, default_value_t = DEFAULT_LEAF_VALIDITY_DAYS)]
        days: u32,
    },
    /// Issue a room appliance's client certificate naming its site and room and, with
    /// --screen-dns or --screen-ip, the HTTPS certificate of its room screen
    /// (screen-SITE-ROOM.pem and .key, for edge.toml's [http_tls] section).
    IssueAppliance {
        #[command(flatten)]
        dir: DirArg,
        /// The site, e.g. austin.
        #[arg(long)]
        site: String,
        /// The room within the site, e.g. 1.
        #[arg(long)]
        room: String,
        /// A DNS name tablets reach the room screen by, e.g. room1.austin.clinic (repeatable).
        #[arg(long = "screen-dns")]
        screen_dns: Vec<String>,
        /// An address tablets reach the room screen at, e.g. 10.1.2.3 (repeatable).
        #[arg(long = "screen-ip")]
        screen_ips: Vec<IpAddr>,
        /// How long the certificates are valid.
        #[arg(long, default_value_t = DEFAULT_LEAF_VALIDITY_DAYS)]
        days: u32,
    },
    /// Revoke a certificate and re-sign crl.pem.
    Revoke {
        #[command(flatten)]
        dir: DirArg,
        /// The certificate file (PEM or DER) to revoke.
        #[arg(long, conflicts_with = "serial", required_unless_present = "serial")]
        cert: Option<PathBuf>,
        /// The serial number (hex) to revoke.
        #[arg(long)]
        serial: Option<String>,
    },
    /// Re-sign crl.pem with a fresh date (it is valid for a year).
    Crl {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Show the site and room an appliance certificate names.
    Identify {
        /// The certificate file (PEM or DER).
        cert: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vigil-cloud: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Pki { command } => pki_command(command).map(|()| ExitCode::SUCCESS),
        Command::Run { config, log_json } => {
            vigil_cloud::init_logging(log_json);
            let config = vigil_cloud::config::CloudConfig::load(&config)?;
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::User { config, command } => {
            let config = vigil_cloud::config::CloudConfig::load(&config)?;
            user_command(&config, command).map(|()| ExitCode::SUCCESS)
        }
        Command::Enrol {
            config,
            site,
            room,
            replace,
        } => {
            let config = vigil_cloud::config::CloudConfig::load(&config)?;
            let store = vigil_cloud::app::open_store(&config)?;
            let by = std::env::var("SUDO_USER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "operator".to_owned());
            let now = vigil_cloud::clock::now_us();
            let made =
                vigil_cloud::fleet::make_code(&store, &config, &site, &room, replace, &by, now)?;
            store.audit(&vigil_cloud::store::AuditRow::cloud(
                now,
                &by,
                "make enrolment code",
                &format!("{site}/{room}{}", if replace { " (replace)" } else { "" }),
                "",
            ))?;
            println!("enrolment code: {}", made.code);
            println!("enrolment site: {site}");
            println!("enrolment room: {room}");
            println!(
                "enrolment expires: {}",
                vigil_shared::zone::rfc3339_utc(made.expires_us)
            );
            println!("cloud sync: {}", made.code.addr);
            println!("ca fingerprint: sha256:{}", made.ca_sha256);
            println!("on the appliance: vigil-edge enrol '{}'", made.code);
            Ok(ExitCode::SUCCESS)
        }
        Command::Staff { config, command } => {
            let config = vigil_cloud::config::CloudConfig::load(&config)?;
            let store = vigil_cloud::app::open_store(&config)?;
            match command {
                StaffCommand::Add {
                    site,
                    id,
                    name,
                    role,
                } => {
                    let pin = read_password()?;
                    let new = vigil_cloud::staff::NewStaff {
                        id: &id,
                        name: &name,
                        role: &role,
                        pin: &pin,
                    };
                    vigil_cloud::staff::set_staff_member(
                        &store,
                        &site,
                        &new,
                        vigil_cloud::clock::now_us(),
                    )?;
                    println!("staff added: {id} ({role}) at {site}");
                }
                StaffCommand::Limits {
                    site,
                    max_dose_mg_per_kg,
                    max_total_mg,
                    max_rate_mg_per_h,
                    min_minutes,
                    max_minutes,
                } => {
                    let current = site_config(&store, &site)?
                        .and_then(|d| d.infusion_limits().ok().flatten())
                        .unwrap_or_default();
                    let limits = vigil_shared::clinical::InfusionLimits {
                        max_dose_mg_per_kg: max_dose_mg_per_kg
                            .unwrap_or(current.max_dose_mg_per_kg),
                        max_total_mg: max_total_mg.unwrap_or(current.max_total_mg),
                        max_rate_mg_per_h: max_rate_mg_per_h.unwrap_or(current.max_rate_mg_per_h),
                        min_minutes: min_minutes.unwrap_or(current.min_minutes),
                        max_minutes: max_minutes.unwrap_or(current.max_minutes),
                    };
                    vigil_cloud::staff::set_infusion_limits(
                        &store,
                        &site,
                        &limits,
                        vigil_cloud::clock::now_us(),
                    )?;
                    println!("infusion limits: {site} {limits:?}");
                }
                StaffCommand::Discharge {
                    site,
                    min_observation_min,
                    max_cadss,
                    bp_systolic_below,
                    bp_diastolic_below,
                    bp_within_pct_of_baseline,
                    bp_max_age_min,
                } => {
                    let current = site_config(&store, &site)?
                        .and_then(|d| d.discharge_rules().ok().flatten())
                        .unwrap_or_default();
                    let rules = vigil_shared::clinical::discharge::DischargeRules {
                        min_observation_min: min_observation_min
                            .unwrap_or(current.min_observation_min),
                        max_cadss: max_cadss.unwrap_or(current.max_cadss),
                        bp_systolic_below: bp_systolic_below.unwrap_or(current.bp_systolic_below),
                        bp_diastolic_below: bp_diastolic_below
                            .unwrap_or(current.bp_diastolic_below),
                        bp_within_pct_of_baseline: bp_within_pct_of_baseline
                            .unwrap_or(current.bp_within_pct_of_baseline),
                        bp_max_age_min: bp_max_age_min.unwrap_or(current.bp_max_age_min),
                    };
                    vigil_cloud::staff::set_discharge_rules(
                        &store,
                        &site,
                        &rules,
                        vigil_cloud::clock::now_us(),
                    )?;
                    println!("discharge rules: {site} {rules:?}");
                }
                StaffCommand::IssueToken { site, label, days } => {
                    let now = vigil_cloud::clock::now_us();
                    let token =
                        vigil_cloud::staff::issue_site_token(&store, &site, &label, days, now)?;
                    println!("site token: {token}");
                    println!("site token label: {label}");
                    println!("site token expires in days: {days}");
                }
                StaffCommand::RevokeToken { site, label } => {
                    let now = vigil_cloud::clock::now_us();
                    vigil_cloud::staff::revoke_site_token(&store, &site, &label, now)?;
                    println!("site token revoked: {label} at {site}");
                }
                StaffCommand::Tokens { site } => {
                    for t in vigil_cloud::staff::site_tokens(&store, &site)? {
                        let state = if t.revoked { "revoked" } else { "active" };
                        println!(
                            "site token: {} {state} created_us={} expires_us={}",
                            t.label, t.created_us, t.expires_us
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { config, to } => {
            let config = vigil_cloud::config::CloudConfig::load(&config)?;
            let store = vigil_cloud::app::open_store(&config)?;
            anyhow::ensure!(
                !to.exists(),
                "{} exists; back up into a new file",
                to.display()
            );
            let backup = vigil_cloud::store::CloudStore::open(&to)
                .with_context(|| format!("cannot create {}", to.display()))?;
            let report = store.copy_into(&backup).inspect_err(|_| {
                drop(std::fs::remove_file(&to));
            })?;
            print_copy("backup", &store.describe(), &backup.describe(), &report);
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { config, from } => {
            let config = vigil_cloud::config::CloudConfig::load(&config)?;
            anyhow::ensure!(from.is_file(), "{} is not a backup file", from.display());
            let backup = vigil_cloud::store::CloudStore::open(&from)
                .with_context(|| format!("cannot open {}", from.display()))?;
            let store = vigil_cloud::app::open_store(&config)?;
            let report = backup.copy_into(&store)?;
            print_copy("restore", &backup.describe(), &store.describe(), &report);
            Ok(ExitCode::SUCCESS)
        }
        Command::MigrateStore {
            config,
            to,
            ca_file,
        } => {
            let config = vigil_cloud::config::CloudConfig::load(&config)?;
            anyhow::ensure!(
                config.store.kind == vigil_cloud::config::StoreKind::Sqlite,
                "the configured store is already PostgreSQL; use backup and restore to move it"
            );
            let url = match to.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {file}"))?
                    .trim()
                    .to_owned(),
                None => to,
            };
            let ca = ca_file
                .map(|p| vigil_cloud::tls::read_certs(&p, "PostgreSQL CA certificate"))
                .transpose()?;
            let store = vigil_cloud::app::open_store(&config)?;
            let target = vigil_cloud::store::CloudStore::open_postgres(&url, ca.as_deref())?;
            let report = store.copy_into(&target)?;
            print_copy(
                "migrate-store",
                &store.describe(),
                &target.describe(),
                &report,
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Reindex { config } => {
            vigil_cloud::init_logging(false);
            let config = vigil_cloud::config::CloudConfig::load(&config)?;
            let store = vigil_cloud::app::open_store(&config)?;
            let report = store.reindex().context("reindex failed")?;
            println!("reindex: {report:?}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(config: vigil_cloud::config::CloudConfig) -> anyhow::Result<()> {
    let cloud = vigil_cloud::app::Cloud::start(config).await?;
    println!("cloud api: {}", cloud.api_url());
    println!("cloud sync: {}", cloud.sync_addr);
    println!("cloud store: {}", cloud.store.describe());
    println!("cloud instance: {}", cloud.instance);
    vigil_web::service::ready(&format!("serving; sync on {}", cloud.sync_addr));
    // The cloud's work is request-driven: a runtime that still runs this task still serves.
    let watchdog = vigil_web::service::spawn_watchdog(|| true);
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch Ctrl-C")?,
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    vigil_web::service::stopping();
    if let Some(w) = watchdog {
        w.abort();
    }
    cloud.shutdown().await;
    Ok(())
}

fn pki_command(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init {
            dir,
            name,
            days,
            force,
        } => {
            let ca = Ca::init_with(
                &dir.dir,
                &CaOptions {
                    name,
                    validity_days: days,
                    force,
                },
            )?;
            println!(
                "created CA in {} (valid until {})",
                ca.dir().display(),
                ca.not_after().date()
            );
            println!("  {}", ca.dir().join(pki::CA_CERT_FILE).display());
            println!(
                "  {} (keep it secret)",
                ca.dir().join(pki::CA_KEY_FILE).display()
            );
            println!("  {}", ca.dir().join(pki::CRL_FILE).display());
        }
        PkiCommand::IssueServer {
            dir,
            dns_names,
            ips,
            out_name,
            days,
        } => {
            let ca = load(&dir.dir, days)?;
            let issued = ca.issue_server(&dns_names, &ips, &out_name)?;
            print_issued("server certificate", &issued);
        }
        PkiCommand::IssueAppliance {
            dir,
            site,
            room,
            screen_dns,
            screen_ips,
            days,
        } => {
            let ca = load(&dir.dir, days)?;
            let (site_id, room_id) = (SiteId(site.clone()), RoomId(room.clone()));
            // The screen's names are the likelier typo: issue it first, so a refused name
            // leaves nothing half-issued.
            let screen = if screen_dns.is_empty() && screen_ips.is_empty() {
                None
            } else {
                Some(ca.issue_screen(&site_id, &room_id, &screen_dns, &screen_ips)?)
            };
            let issued = ca.issue_appliance(&site_id, &room_id)?;
            print_issued(&format!("appliance certificate for {site}/{room}"), &issued);
            if let Some(screen) = screen {
                print_issued(
                    &format!("room screen certificate for {site}/{room}"),
                    &screen,
                );
                println!(
                    "  in edge.toml: [http_tls] cert = \"{}\", key = \"{}\"",
                    screen.cert_path.display(),
                    screen.key_path.display()
                );
                if !screen_dns.is_empty() {
                    let names: Vec<String> = screen_dns.iter().map(|n| format!("{n:?}")).collect();
                    println!("  in edge.toml: http_hosts = [{}]", names.join(", "));
                }
            }
        }
        PkiCommand::Revoke { dir, cert, serial } => {
            let ca = Ca::load(&dir.dir)?;
            let revocation = match (cert, serial) {
                (Some(cert), _) => ca.revoke_cert_file(&cert)?,
                (None, Some(serial)) => ca.revoke(&serial.parse::<Serial>()?)?,
                // clap requires one of the two.
                (None, None) => anyhow::bail!("give --cert FILE or --serial HEX"),
            };
            let verb = if revocation.newly_revoked {
                "revoked"
            } else {
                "already revoked"
            };
            println!(
                "{verb} serial {}; CRL re-signed: {}",
                revocation.serial,
                revocation.crl_path.display()
            );
            println!(
                "the cloud refuses it from its next CRL reload; close that appliance's open connection"
            );
        }
        PkiCommand::Crl { dir } => {
            let path = Ca::load(&dir.dir)?.write_crl()?;
            println!("CRL re-signed: {}", path.display());
        }
        PkiCommand::Identify { cert } => {
            let der = pki::read_cert_file(&cert)?;
            let identity = pki::appliance_identity(&der)
                .with_context(|| format!("reading {}", cert.display()))?;
            println!(
                "site {} room {} (serial {})",
                identity.site,
                identity.room,
                pki::cert_serial(&der)?
            );
        }
    }
    Ok(())
}

/// Reads a password: one line of standard input, without its line ending.
/// The site's configuration document as the cloud holds it; `None` before it exists (or if
/// it cannot be read, when the defaults apply).
fn site_config(
    store: &vigil_cloud::store::CloudStore,
    site: &str,
) -> anyhow::Result<Option<vigil_shared::doc::SiteConfigDoc>> {
    Ok(store
        .load_document(site)?
        .and_then(|mut d| vigil_shared::doc::SiteConfigDoc::load(&d.doc.save()).ok()))
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// What a copy did, as `name: value` lines.
fn print_copy(what: &str, from: &str, to: &str, report: &vigil_cloud::store::CopyReport) {
    println!("{what} from: {from}");
    println!("{what} to: {to}");
    for (table, rows) in &report.tables {
        println!("{what} rows {table}: {rows}");
    }
}

fn user_command(
    config: &vigil_cloud::config::CloudConfig,
    command: UserCommand,
) -> anyhow::Result<()> {
    use vigil_cloud::auth::{self, Role};
    let store = vigil_cloud::app::open_store(config)?;
    match command {
        UserCommand::Add {
            username,
            role,
            region,
            site,
        } => {
            let role = Role::from_name(&role).with_context(|| {
                format!("unknown role {role:?}; one of admin, regional-manager, clinician")
            })?;
            let password = read_password()?;
            auth::add_user(
                &store,
                &config.sites,
                &auth::NewUser {
                    username: &username,
                    role,
                    region: region.as_deref(),
                    site: site.as_deref(),
                    password: &password,
                },
                vigil_cloud::clock::now_us(),
            )?;
            println!("user added: {username} ({})", role.name());
        }
        UserCommand::Passwd { username } => {
            let password = read_password()?;
            auth::check_password(&password)?;
            if !store.set_password(&username, &auth::hash_password(&password)?)? {
                anyhow::bail!("no user {username:?}; see `vigil-cloud user list`");
            }
            println!("password changed: {username}");
        }
        UserCommand::Disable { username } => {
            if !store.set_disabled(&username, true)? {
                anyhow::bail!("no user {username:?}; see `vigil-cloud user list`");
            }
            println!("user disabled: {username}");
        }
        UserCommand::Enable { username } => {
            if !store.set_disabled(&username, false)? {
                anyhow::bail!("no user {username:?}; see `vigil-cloud user list`");
            }
            println!("user enabled: {username}");
        }
        UserCommand::List => {
            for u in store.users()? {
                println!(
                    "user: {} {} {}{}",
                    u.username,
                    u.role,
                    if u.scope.is_empty() { "-" } else { &u.scope },
                    if u.disabled { " disabled" } else { "" }
                );
            }
        }
        UserCommand::Token {
            username,
            label,
            days,
        } => {
            let now = vigil_cloud::clock::now_us();
            let token = auth::issue_api_token(&store, &username, &label, days, now)?;
            println!("api token: {token}");
            let expires = now + i64::from(days) * vigil_shared::zone::US_PER_DAY;
            println!(
                "expires: {}",
                vigil_shared::zone::SiteZone::utc().minute(expires)
            );
        }
    }
    Ok(())
}

fn load(dir: &Path, leaf_days: u32) -> anyhow::Result<Ca> {
    let mut ca = Ca::load(dir)?;
    ca.set_leaf_validity_days(leaf_days)?;
    Ok(ca)
}

fn print_issued(what: &str, issued: &IssuedCert) {
    println!(
        "issued {what}, serial {} (valid until {})",
        issued.serial,
        issued.not_after.date()
    );
    println!("  {}", issued.cert_path.display());
    println!("  {} (keep it secret)", issued.key_path.display());
}
