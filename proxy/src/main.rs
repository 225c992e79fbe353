//! The `proxy` binary: Envoy-style flags in, a running sidecar out.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, ValueEnum};
use skiff_proxy::{
    app::{self, Settings},
    config::Source,
};
use tracing_subscriber::filter::LevelFilter;

/// Skiff, a service-mesh sidecar proxy configured like Envoy.
#[derive(Debug, Parser)]
#[command(name = "proxy", version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Envoy v3 bootstrap file, YAML or JSON (by extension: .json is JSON, anything else YAML).
    #[arg(short = 'c', long = "config-path", value_name = "FILE")]
    config_path: Option<PathBuf>,

    /// Envoy v3 bootstrap as inline YAML, merged over --config-path when both are given.
    #[arg(long = "config-yaml", value_name = "YAML")]
    config_yaml: Option<String>,

    /// `serve` runs the proxy; `validate` checks the configuration and exits.
    #[arg(long, value_enum, default_value_t = Mode::Serve)]
    mode: Mode,

    /// Worker threads (default: the number of CPUs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: Option<u16>,

    /// Log level: trace, debug, info, warning (warn), error, critical, off.
    #[arg(short = 'l', long = "log-level", default_value = "info", value_parser = parse_level)]
    log_level: LevelFilter,

    /// Overrides node.cluster.
    #[arg(long = "service-cluster", value_name = "NAME")]
    service_cluster: Option<String>,

    /// Overrides node.id.
    #[arg(long = "service-node", value_name = "ID")]
    service_node: Option<String>,

    /// Write the admin server's bound address (ip:port) to this file once it listens.
    #[arg(long = "admin-address-path", value_name = "FILE")]
    admin_address_path: Option<PathBuf>,

    /// After SIGTERM/SIGINT, how long open connections may take to finish, in seconds.
    #[arg(long = "drain-time-s", value_name = "SECONDS", default_value_t = 5)]
    drain_time_s: u64,

    /// Send `authorization: Bearer <token>` on the ADS stream, reading the token from this file
    /// on every (re)connect (Istio mounts it at /var/run/secrets/tokens/istio-token).
    #[arg(long = "xds-token-file", value_name = "FILE")]
    xds_token_file: Option<PathBuf>,

    /// Serve the secrets `default` and `ROOTCA` from Istio's mounted-certificate layout in this
    /// directory (cert-chain.pem, key.pem, root-cert.pem), reloading them when they change.
    #[arg(long = "cert-dir", value_name = "DIR")]
    cert_dir: Option<PathBuf>,

    /// Request the workload certificate from an Istio CA at HOST:PORT (pilot-agent's CA_ADDR,
    /// istiod's 15012) and serve it as the secrets `default` and `ROOTCA`, renewed at half its
    /// lifetime.
    #[arg(
        long = "ca-address",
        value_name = "HOST:PORT",
        conflicts_with = "cert_dir"
    )]
    ca_address: Option<String>,

    /// The PEM root that signed the CA's serving certificate (re-read for every request).
    #[arg(long = "ca-root-cert", value_name = "FILE", requires = "ca_address",
          default_value = skiff_proxy::tls::ca::DEFAULT_ROOT_CERT)]
    ca_root_cert: PathBuf,

    /// Send `authorization: Bearer <token>` to the CA, reading the token from this file for
    /// every request (Istio mounts it at /var/run/secrets/tokens/istio-token).
    #[arg(long = "ca-token-file", value_name = "FILE", requires = "ca_address")]
    ca_token_file: Option<PathBuf>,

    /// The `ClusterID` metadata sent to the CA (pilot-agent's ISTIO_META_CLUSTER_ID).
    #[arg(long = "ca-cluster-id", value_name = "ID", requires = "ca_address",
          default_value = skiff_proxy::tls::ca::DEFAULT_CLUSTER_ID)]
    ca_cluster_id: String,

    /// The workload's identity (default: spiffe://cluster.local/ns/$POD_NAMESPACE/sa/$SERVICE_ACCOUNT).
    #[arg(long = "spiffe-id", value_name = "ID", requires = "ca_address")]
    spiffe_id: Option<String>,

    /// The workload certificate lifetime to request, in seconds (pilot-agent's SECRET_TTL).
    #[arg(long = "workload-cert-ttl-s", value_name = "SECONDS", requires = "ca_address",
          default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    workload_cert_ttl_s: u64,

    /// The kind of key generated for the workload certificate (`rsa` is refused: ring cannot
    /// generate RSA keys).
    #[arg(long = "ca-key-kind", value_enum, requires = "ca_address", default_value_t = CaKeyKind::Ecdsa)]
    ca_key_kind: CaKeyKind,

    /// Accepted for Envoy compatibility: Skiff never hot-restarts, so this is always true.
    #[arg(long = "disable-hot-restart")]
    disable_hot_restart: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// A development CA: creates (or reuses) a root in DIR and writes a workload certificate for
    /// each NAME=SPIFFE-ID into DIR/NAME in Istio's layout (cert-chain.pem, key.pem,
    /// root-cert.pem), ready for --cert-dir.
    DevCa {
        /// Where the root (root-cert.pem, root-key.pem) and the workload directories go.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The trust domain of the root.
        #[arg(long = "trust-domain", default_value = "cluster.local")]
        trust_domain: String,
        /// How long the workload certificates are valid, in hours.
        #[arg(long = "valid-hours", default_value_t = 24)]
        valid_hours: u64,
        /// Issue certificates that expired a day ago (for testing refusals).
        #[arg(long, conflicts_with = "valid_hours")]
        expired: bool,
        /// NAME=spiffe://TRUST-DOMAIN/ns/NS/sa/SA, one per workload.
        #[arg(value_name = "NAME=SPIFFE-ID", required = true)]
        workloads: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CaKeyKind {
    /// ECDSA P-256 (pilot-agent's ECC_SIGNATURE_ALGORITHM=ECDSA).
    Ecdsa,
    /// RSA 2048 (pilot-agent's default).
    Rsa,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Serve,
    Validate,
}

fn parse_level(s: &str) -> Result<LevelFilter, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        "info" => LevelFilter::INFO,
        "warning" | "warn" => LevelFilter::WARN,
        "error" | "critical" => LevelFilter::ERROR,
        "off" => LevelFilter::OFF,
        other => {
            return Err(format!(
                "'{other}' is not a log level (trace, debug, info, warning, error, critical, off)"
            ));
        }
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::DevCa {
        dir,
        trust_domain,
        valid_hours,
        expired,
        workloads,
    }) = &args.command
    {
        return dev_ca(dir, trust_domain, *valid_hours, *expired, workloads);
    }
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let source = Source {
        path: args.config_path.clone(),
        yaml: args.config_yaml.clone(),
        service_cluster: args.service_cluster.clone(),
        service_node: args.service_node.clone(),
    };
    let bootstrap = match source.load() {
        Ok(b) => b,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    for w in &bootstrap.warnings {
        tracing::warn!("configuration: {w}");
    }
    if args.mode == Mode::Validate {
        let what = args
            .config_path
            .as_ref()
            .map_or_else(|| "--config-yaml".to_string(), |p| p.display().to_string());
        #[allow(clippy::print_stdout)] // the validate mode's whole output
        {
            println!("configuration '{what}' OK");
        }
        return ExitCode::SUCCESS;
    }

    let workers = args.concurrency.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("skiff-worker")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = Settings {
        workers,
        drain_time: Duration::from_secs(args.drain_time_s),
        admin_address_path: args.admin_address_path,
        xds: skiff_proxy::xds::XdsFlags {
            token_file: args.xds_token_file,
        },
        cert_dir: args.cert_dir,
        ca: args
            .ca_address
            .map(|address| skiff_proxy::tls::ca::CaFlags {
                address,
                root_cert: args.ca_root_cert,
                token_file: args.ca_token_file,
                cluster_id: args.ca_cluster_id,
                spiffe_id: args.spiffe_id,
                lifetime: Duration::from_secs(args.workload_cert_ttl_s),
                key: match args.ca_key_kind {
                    CaKeyKind::Ecdsa => skiff_proxy::tls::ca::KeyKind::EcdsaP256,
                    CaKeyKind::Rsa => skiff_proxy::tls::ca::KeyKind::Rsa2048,
                },
            }),
    };
    let _ = args.disable_hot_restart;
    match runtime.block_on(app::run(bootstrap, settings)) {
        Ok(()) => {
            // Connections still open after the drain are closed by dropping the runtime.
            runtime.shutdown_timeout(Duration::from_millis(100));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `proxy dev-ca`: writes a root and workload certificates.
fn dev_ca(
    dir: &std::path::Path,
    trust_domain: &str,
    valid_hours: u64,
    expired: bool,
    workloads: &[String],
) -> ExitCode {
    use skiff_proxy::tls::dev_ca::{DevCa, Validity};
    let parsed: Result<Vec<(&str, &str)>, String> = workloads
        .iter()
        .map(|w| {
            w.split_once('=')
                .filter(|(n, id)| !n.is_empty() && !n.contains('/') && !id.is_empty())
                .ok_or_else(|| format!("'{w}': expected NAME=SPIFFE-ID"))
        })
        .collect();
    let validity = if expired {
        Validity::expired()
    } else {
        Validity::for_lifetime(Duration::from_secs(valid_hours * 3600))
    };
    let run = || -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ca = DevCa::open_or_create(dir, trust_domain).map_err(|e| e.to_string())?;
        for (name, id) in parsed? {
            ca.write_workload(&dir.join(name), id, validity)
                .map_err(|e| e.to_string())?;
            eprintln!("{id}: {}", dir.join(name).display());
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dev-ca: {e}");
            ExitCode::FAILURE
        }
    }
}
