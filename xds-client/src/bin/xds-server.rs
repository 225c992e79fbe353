//! `xds-server`: a test xDS management server. It serves the Envoy v3 resources in a directory
//! over ADS (state of the world and incremental), pushes every edit of the directory to the
//! connected clients, and logs each ACK and NACK.
//!
//! Once listening it prints `listening on ADDR` on stdout (and writes `ADDR` to
//! `--address-path`), so a test can start it on port 0 and learn the port. Logs go to stderr.

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use clap::Parser;
use tokio::net::{TcpListener, UnixListener};
use xds_client::{
    schema::Schema,
    server::{LoadError, Resources, ServeError, Server, ServerHandle},
};

/// Serves a directory of Envoy v3 resources over ADS, and reloads it when it changes.
#[derive(Debug, Parser)]
#[command(name = "xds-server", version)]
struct Args {
    /// Directory of resource files (.yaml, .yml, .json), each holding one resource or a list,
    /// in the proto3 JSON mapping with the type in "@type".
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,

    /// Where to listen: HOST:PORT (port 0 picks a free port) or unix:PATH.
    #[arg(long, value_name = "ADDR", value_parser = ListenAddr::parse)]
    listen: ListenAddr,

    /// How often to look for changes in DIR, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    poll_interval_ms: u64,

    /// Also write the address listened on (HOST:PORT or unix:PATH) to this file, atomically.
    #[arg(long, value_name = "FILE")]
    address_path: Option<PathBuf>,
}

/// Where to listen.
#[derive(Clone, Debug)]
enum ListenAddr {
    /// `HOST:PORT`, resolved when binding.
    Tcp(String),
    /// `unix:PATH`.
    Unix(PathBuf),
}

/// Why the server could not start, or stopped.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("could not listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("could not write the address to {}: {source}", path.display())]
    AddressFile { path: PathBuf, source: io::Error },
    #[error("could not start the async runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("{0}")]
    Serve(#[from] ServeError),
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_max_level(tracing::Level::INFO)
        .init();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::Runtime)
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("xds-server: {failure}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    let schema = Arc::new(Schema::load());
    let resources = Resources::load_dir(&args.dir, &schema)?;
    let server = Server::new();
    let count = resources.len();
    let version = server.set_resources(resources);
    tracing::info!(dir = %args.dir.display(), resources = count, version, "loaded");

    let (handle, address) = listen(&server, &args.listen).await?;
    announce(&address, args.address_path.as_deref())?;
    tracing::info!(%address, "serving ADS");

    let poll = Duration::from_millis(args.poll_interval_ms);
    let _watcher = server.watch_dir(args.dir, schema, poll);
    handle.wait().await?;
    Ok(())
}

/// Binds and starts serving; returns the address as printed.
async fn listen(server: &Server, addr: &ListenAddr) -> Result<(ServerHandle, String), Failure> {
    let failed = |addr: &str, error: io::Error| Failure::Listen {
        addr: addr.to_string(),
        reason: match error.kind() {
            io::ErrorKind::AddrInUse => "the address is already in use".to_string(),
            _ => error.to_string(),
        },
    };
    match addr {
        ListenAddr::Tcp(host_port) => {
            let listener = TcpListener::bind(host_port.as_str())
                .await
                .map_err(|e| failed(host_port, e))?;
            let bound = listener.local_addr().map_err(|e| failed(host_port, e))?;
            Ok((server.serve_tcp(listener), bound.to_string()))
        }
        ListenAddr::Unix(path) => {
            let shown = format!("unix:{}", path.display());
            remove_stale_socket(path);
            let listener = UnixListener::bind(path).map_err(|e| failed(&shown, e))?;
            Ok((server.serve_unix(listener), shown))
        }
    }
}

/// Removes a socket file left by a server that is gone (nothing accepts on it), so that a
/// restarted server can bind the same path. A live socket is left alone, and binding it fails.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt as _;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket
        && std::os::unix::net::UnixStream::connect(path)
            .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Prints the address on stdout and writes it to `address_path`: to a temporary file first,
/// then renamed, so a reader never sees a partial address.
fn announce(address: &str, address_path: Option<&Path>) -> Result<(), Failure> {
    {
        // Whoever started the server may not read stdout; the address file is then the way.
        let mut stdout = io::stdout().lock();
        let _ = writeln!(stdout, "listening on {address}");
        let _ = stdout.flush();
    }
    let Some(path) = address_path else {
        return Ok(());
    };
    let failed = |source| Failure::AddressFile {
        path: path.to_path_buf(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&temporary, address).map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}

// === impl ListenAddr ===

impl ListenAddr {
    fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, as in unix:/run/xds.sock".to_string());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(text.to_string()))
            }
            _ => Err(format!(
                "expected HOST:PORT (such as 127.0.0.1:0) or unix:PATH, not {text:?}"
            )),
        }
    }
}
