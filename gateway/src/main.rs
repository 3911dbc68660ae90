//! The `portcullis` command line.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis::config;

use portcullis::state::GatewayState;

/// Allocation is on every request's path (headers, the per-request state); mimalloc's
/// thread-local free lists cost less than glibc's malloc here (measured in the README).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An API gateway for the DMZ: YAML policies of assertions in front of every service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a policy file.
    Run {
        /// The policy file.
        #[arg(short, long)]
        config: PathBuf,
        /// Also serve the demo echo upstream on this address.
        #[arg(long)]
        echo: Option<SocketAddr>,
    },
    /// Run the demo: the gateway with policies/demo.yaml in front of a built-in echo upstream on 127.0.0.1:9090.
    Demo {
        /// The policy file.
        #[arg(short, long, default_value = "policies/demo.yaml")]
        config: PathBuf,
        /// Where the built-in echo upstream listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        echo: SocketAddr,
    },
    /// Check a policy file: print every error as file:line:col: message; exit 1 if any.
    Check {
        /// The policy file (its includes are checked too).
        #[arg(short, long)]
        config: PathBuf,
        /// Also open the state store read-only and check it (SQLite: the file exists, is readable and has this version's schema); without it only the state URL's syntax is checked.
        #[arg(long)]
        connect: bool,
    },
    /// Dry-run a raw HTTP request through the matching service's request pipeline; exit 0 allow, 1 deny, 2 error.
    Eval {
        /// The policy file.
        #[arg(short, long)]
        config: PathBuf,
        /// A file holding a raw HTTP/1.1 request (request line, headers, blank line, body).
        #[arg(short, long)]
        request: PathBuf,
        /// The TCP peer address to assume.
        #[arg(long, default_value = "127.0.0.1")]
        client_ip: IpAddr,
    },
    /// Print the JSON Schema of the policy language (for editor completion).
    Schema {
        /// The schema of `portcullis test` files instead.
        #[arg(long)]
        tests: bool,
    },
    /// Run golden test cases (files, or folders searched for YAML files with `cases:`) through the policies they name, in process; exit 0 when all pass, 1 otherwise, 2 on a usage error.
    Test {
        /// Test files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Run every case that names no time at this instant (seconds since the Unix epoch).
        #[arg(long)]
        at: Option<u64>,
        /// `text` (default) or `junit`.
        #[arg(long, default_value = "text")]
        format: TestFormat,
        /// Also list the steps and `any` branches no case exercised.
        #[arg(long)]
        coverage: bool,
    },
    /// Replay captured requests (JSON lines) through two policies and report, per service and step, the requests whose verdict or upstream headers differ; exit 0 when none do, 1 when some do, 2 on an error.
    Replay {
        /// The policy in force.
        #[arg(long)]
        old: PathBuf,
        /// The policy to compare with it.
        #[arg(long)]
        new: PathBuf,
        /// The captured requests, one JSON object a line (docs/policy-testing.md).
        #[arg(long)]
        requests: PathBuf,
        /// The capture's hash key (a file), to resolve hashed credentials with `--credentials`.
        #[arg(long)]
        capture_key: Option<PathBuf>,
        /// Credential values to put back where the capture hashed them (a file, one a line).
        #[arg(long, requires = "capture_key")]
        credentials: Option<PathBuf>,
        /// `text` (default) or `json`.
        #[arg(long, default_value = "text")]
        format: ReplayFormat,
    },
    /// Print the SHA-256 of an API key read from standard input, for `sha256:` in require_api_key.
    HashKey,
    /// Print the argon2id hash (a PHC string) of a password read from standard input, for `password_argon2id:` in the SAML issuer's users file.
    HashPassword,
    /// Sign a request as a client would (prints headers, a curl command or a presigned URL).
    Sign {
        #[command(subcommand)]
        scheme: Box<portcullis::sign_cli::SignScheme>,
    },
    /// Serve only the demo echo upstream.
    Echo {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: SocketAddr,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReplayFormat {
    Text,
    Json,
}

/// The arguments of `portcullis replay`.
struct ReplayArgs {
    old: PathBuf,
    new: PathBuf,
    requests: PathBuf,
    capture_key: Option<PathBuf>,
    credentials: Option<PathBuf>,
    format: ReplayFormat,
}

/// `portcullis replay`.
fn replay(args: &ReplayArgs) -> ExitCode {
    use portcullis::files::{read_bounded, read_bounded_text, FileKind};
    use portcullis::replay::{ReplayPolicy, Resolver};
    let load =
        |path: &std::path::Path| ReplayPolicy::load(path).map_err(|invalid| eprintln!("{invalid}"));
    let (Ok(old), Ok(new)) = (load(&args.old), load(&args.new)) else {
        return ExitCode::from(2);
    };
    let lines = match read_bounded_text(&args.requests, FileKind::Capture) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let resolver = match (&args.capture_key, &args.credentials) {
        (Some(key), credentials) => {
            let key = match read_bounded(key, FileKind::Secret) {
                Ok(key) => portcullis::capture::CaptureKey::new(key.trim_ascii_end()),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let values = match credentials
                .as_deref()
                .map(|c| read_bounded_text(c, FileKind::Secret))
            {
                Some(Ok(text)) => text
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
                Some(Err(e)) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
                None => Vec::new(),
            };
            Resolver::new(&key, &values)
        }
        (None, _) => Resolver::default(),
    };
    let report = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(portcullis::replay::replay(&old, &new, &lines, &resolver)),
        Err(e) => {
            eprintln!("cannot start the replay: {e}");
            return ExitCode::from(2);
        }
    };
    let text = match args.format {
        ReplayFormat::Text => report.text(),
        ReplayFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
    };
    let text = portcullis_assertions::pan::mask_str(
        &text,
        portcullis_assertions::pan::MaskStyle::default(),
    );
    let _ = write!(std::io::stdout().lock(), "{text}");
    if report.changed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TestFormat {
    Text,
    Junit,
}

/// `portcullis test`: every file's cases, one report.
fn test(paths: &[PathBuf], at: Option<u64>, format: TestFormat, coverage: bool) -> ExitCode {
    use portcullis::policy_test;
    let files = match policy_test::collect_test_files(paths) {
        Ok(files) if !files.is_empty() => files,
        Ok(_) => {
            eprintln!("no test files (YAML files with a top-level `cases:`) found");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let options = policy_test::Options { at };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the test run: {e}");
            return ExitCode::from(2);
        }
    };
    let results: Vec<_> = files
        .iter()
        .map(|file| runtime.block_on(policy_test::run_file(file, options)))
        .collect();
    let report = match format {
        TestFormat::Text => policy_test::report::text(&results, coverage),
        TestFormat::Junit => policy_test::report::junit(&results),
    };
    // As with eval: no card number leaves in a report.
    let report = portcullis_assertions::pan::mask_str(
        &report,
        portcullis_assertions::pan::MaskStyle::default(),
    );
    let _ = write!(std::io::stdout().lock(), "{report}");
    if results.iter().all(policy_test::FileResult::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn init_logging() {
    // Diagnostics pass through the card-number masker too: no PAN in any log.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .format(|buf, record| {
            let text = record.args().to_string();
            let text = portcullis_assertions::pan::mask_str(
                &text,
                portcullis_assertions::pan::MaskStyle::default(),
            );
            writeln!(
                buf,
                "[{} {} {}] {text}",
                buf.timestamp(),
                record.level(),
                record.target()
            )
        })
        .init();
}

fn run(config: &std::path::Path, echo: Option<SocketAddr>) -> ExitCode {
    init_logging();
    // Loaded on a thread of its own: what the load allocates and drops again (the parsed
    // YAML, gathered files) belongs to that thread's heap, which the allocator hands back
    // when the thread ends, instead of keeping it resident for the process's life.
    let loaded = std::thread::scope(|scope| scope.spawn(|| GatewayState::load(config)).join());
    let Ok(loaded) = loaded else {
        eprintln!("the policy load failed");
        return ExitCode::from(1);
    };
    let state = match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let rt = state.current();
    let listen: Vec<String> = rt.settings.listen.iter().map(ToString::to_string).collect();
    log::info!(
        "portcullis {} serving {} service(s) on {}; admin on {}",
        env!("CARGO_PKG_VERSION"),
        rt.services.len(),
        listen.join(", "),
        rt.settings
            .admin_listen
            .map_or_else(|| "(disabled)".to_owned(), |a| a.to_string())
    );
    if let Some(e) = echo {
        log::info!("demo echo upstream on {e}");
    }
    match rt.settings.run_as.clone() {
        Some(run_as) => {
            let listeners: Vec<_> = rt.settings.listen.iter().chain(&rt.settings.tls_listen).chain(&rt.settings.admin_listen).copied().collect();
            std::thread::spawn(move || match portcullis::privileges::drop_after_bind(&run_as, &listeners) {
                Ok(()) => log::info!("listeners bound; now running as user {} (uid {}, gid {})", run_as.user, run_as.uid, run_as.gid),
                Err(e) => {
                    log::error!("cannot drop privileges to user {}: {e}; stopping", run_as.user);
                    std::process::exit(1);
                }
            });
        }
        None if portcullis::privileges::is_root() => log::warn!(
            "running as root: every request is handled with root's rights. Set `user:` in the policy to drop them once the listeners are bound"
        ),
        None => {}
    }
    let mut server = portcullis::server::build(&state, echo);
    portcullis::server::exit_when_drained(&mut server, &state);
    server.run(pingora::server::RunArgs::default());
    // Usage counted since the last flush goes to the store before the process ends.
    let n = state.flush_usage();
    log::info!("stopped; usage of {n} token(s) written at shutdown");
    ExitCode::SUCCESS
}

/// `portcullis check`: the policy as `run` would load it, without opening its state store
/// unless `connect` asks for a read-only look at it.
fn check(config: &std::path::Path, connect: bool) -> ExitCode {
    let rt = match config::load_dry_run(config) {
        Ok(rt) => rt,
        Err(invalid) => {
            eprintln!("{invalid}");
            eprintln!("{} error(s)", invalid.0.len());
            return ExitCode::from(1);
        }
    };
    for warning in &rt.warnings {
        eprintln!("{warning} [warning]");
    }
    let state_url = rt.state_url.clone();
    // A dry run never opens the store: say so, so a passing check is not read as "the
    // store works".
    if let Some(url) = state_url {
        if connect {
            match url.verify() {
                Ok(summary) => println!("state: {summary}"),
                Err(error) => {
                    eprintln!("{}: state {url}: {error}", config.display());
                    eprintln!("1 error(s)");
                    return ExitCode::from(1);
                }
            }
        } else {
            println!("state: {url}: URL ok; state store not opened; use --connect to verify");
        }
    }
    println!(
        "{}: ok ({} service(s))",
        config.display(),
        rt.services.len()
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, echo } => run(&config, echo),
        Command::Demo { config, echo } => run(&config, Some(echo)),
        Command::Check { config, connect } => check(&config, connect),
        Command::Eval {
            config,
            request,
            client_ip,
        } => {
            let rt = match config::load_dry_run(&config) {
                Ok(rt) => rt,
                Err(invalid) => {
                    eprintln!("{invalid}");
                    return ExitCode::from(2);
                }
            };
            let raw = match portcullis::files::read_bounded(
                &request,
                portcullis::files::FileKind::Request,
            ) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let req = match portcullis::eval::parse_request(&raw) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{}: {e}", request.display());
                    return ExitCode::from(2);
                }
            };
            // Steps' remote work (key fetches, introspection) runs as in the gateway.
            let evaluation = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| runtime.block_on(portcullis::eval::evaluate(&rt, req, client_ip)));
            let (report, allowed) = match evaluation {
                Ok(result) => result,
                Err(e) => {
                    eprintln!("cannot start the evaluation: {e}");
                    return ExitCode::from(2);
                }
            };
            let report = portcullis_assertions::pan::mask_str(
                &report,
                portcullis_assertions::pan::MaskStyle::default(),
            );
            print!("{report}");
            if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Sign { scheme } => match portcullis::sign_cli::run(&scheme) {
            Ok(text) => {
                let _ = write!(std::io::stdout().lock(), "{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::from(2)
            }
        },
        Command::Replay {
            old,
            new,
            requests,
            capture_key,
            credentials,
            format,
        } => replay(&ReplayArgs {
            old,
            new,
            requests,
            capture_key,
            credentials,
            format,
        }),
        Command::Test {
            paths,
            at,
            format,
            coverage,
        } => test(&paths, at, format, coverage),
        Command::Schema { tests } => {
            let schema = if tests {
                portcullis::test_schema()
            } else {
                portcullis::schema()
            };
            let text = serde_json::to_string_pretty(&schema).unwrap_or_default();
            // A closed pipe (`portcullis schema | head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            ExitCode::SUCCESS
        }
        Command::HashKey => {
            let mut key = String::new();
            if std::io::stdin().read_to_string(&mut key).is_err() {
                eprintln!("cannot read the key from standard input");
                return ExitCode::from(2);
            }
            let key = key.trim_end_matches(['\n', '\r']);
            if key.is_empty() {
                eprintln!("no key on standard input");
                return ExitCode::from(2);
            }
            println!(
                "{}",
                hex::encode(portcullis_assertions::api_key::digest(key.as_bytes()))
            );
            ExitCode::SUCCESS
        }
        Command::HashPassword => {
            let mut password = String::new();
            if std::io::stdin().read_to_string(&mut password).is_err() {
                eprintln!("cannot read the password from standard input");
                return ExitCode::from(2);
            }
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                eprintln!("no password on standard input");
                return ExitCode::from(2);
            }
            match portcullis::basic_auth::users::hash_password(password) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cannot hash the password: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Echo { listen } => {
            init_logging();
            let conf = pingora::server::configuration::ServerConf::default();
            let mut server = pingora::server::Server::new_with_opt_and_conf(None, conf);
            server.bootstrap();
            let mut app = pingora::services::listening::Service::new(
                "portcullis echo".to_owned(),
                portcullis::echo::EchoApp,
            );
            app.add_tcp(&listen.to_string());
            server.add_service(app);
            log::info!("echo upstream on {listen}");
            server.run_forever()
        }
    }
}
