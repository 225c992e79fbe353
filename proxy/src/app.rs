//! Wires a validated configuration into a running proxy: clusters, listeners, the admin server,
//! signals, and graceful shutdown.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::net::TcpListener;

use crate::{
    admin::{self, AdminState},
    config::Bootstrap,
    listener::{ActiveConns, BindError, ListenerManager},
    snapshot::{Live, Snapshot},
    xds::{self, XdsError, XdsFlags},
};

/// Settings that come from flags rather than the bootstrap.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Worker threads (`--concurrency`); listeners with `SO_REUSEPORT` get a socket each.
    pub workers: usize,
    /// How long open connections may take to finish after SIGTERM (`--drain-time-s`).
    pub drain_time: Duration,
    /// Where to write the admin server's address once bound (`--admin-address-path`).
    pub admin_address_path: Option<PathBuf>,
    /// ADS settings from flags.
    pub xds: XdsFlags,
    /// Istio's mounted certificates (`--cert-dir`): the secrets `default` and `ROOTCA`.
    pub cert_dir: Option<PathBuf>,
    /// An Istio CA (`--ca-address` and friends): the secrets `default` and `ROOTCA`, issued and
    /// renewed.
    pub ca: Option<crate::tls::ca::CaFlags>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The admin server could not be bound.
    #[error("cannot bind the admin server to {address}: {source}")]
    Admin {
        /// The admin address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The ADS stream could not be started.
    #[error(transparent)]
    Xds(#[from] XdsError),
    /// The certificate directory could not be loaded.
    #[error("cannot load certificates: {0}")]
    Certificates(#[from] crate::tls::secrets::SecretError),
    /// The CA client could not start.
    #[error(transparent)]
    Ca(#[from] crate::tls::ca::CaSetupError),
    /// The admin address could not be written out.
    #[error("cannot write the admin address to '{path}': {source}")]
    AdminAddressPath {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the proxy until SIGTERM, SIGINT or `POST /quitquitquit`, then drains and returns.
pub async fn run(bootstrap: Bootstrap, settings: Settings) -> Result<(), StartError> {
    // Secrets first: listeners and clusters read them on every handshake.
    for s in &bootstrap.secrets {
        crate::tls::secrets::slot(&s.name).set(&s.data)?;
        if let Some(files) = s.files.clone() {
            // Read from files: reloaded when they change, as --cert-dir is.
            let name = s.name.clone();
            crate::tls::secrets::watch_files(files.paths(), CERT_DIR_POLL, move || {
                let data =
                    files
                        .read()
                        .map_err(|problem| crate::tls::secrets::SecretError::File {
                            path: files.paths()[0].clone(),
                            problem,
                        })?;
                crate::tls::secrets::slot(&name).set(&data)
            });
        }
    }
    if let Some(dir) = &settings.cert_dir {
        crate::tls::secrets::CertDir { dir: dir.clone() }.load_and_watch(CERT_DIR_POLL)?;
    }
    // Renews for the process's life; the handle feeds `/stats`.
    let ca = match &settings.ca {
        Some(ca) => Some(crate::tls::ca::start(ca).await?),
        None => None,
    };
    let snapshot = Arc::new(Snapshot::new(&bootstrap));
    // Envoy warms clusters before listeners take traffic: resolve STRICT_DNS names first.
    snapshot.clusters.resolve_all().await;

    let state = Arc::new(AdminState::new(bootstrap.raw.clone()));
    if let Some(ca) = ca {
        // Set once, here: the admin state was created just above.
        let _ = state.ca.set(ca);
    }
    if let Some(admin) = &bootstrap.admin {
        let socket =
            TcpListener::bind(admin.address)
                .await
                .map_err(|source| StartError::Admin {
                    address: admin.address,
                    source,
                })?;
        let bound = socket.local_addr().map_err(|source| StartError::Admin {
            address: admin.address,
            source,
        })?;
        if let Some(path) = &settings.admin_address_path {
            std::fs::write(path, bound.to_string()).map_err(|source| {
                StartError::AdminAddressPath {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        tracing::info!(address = %bound, "admin server listening");
        tokio::spawn(admin::serve(socket, state.clone()));
    }

    let live = Arc::new(Live::new(snapshot.clone()));
    let active = Arc::new(ActiveConns::default());
    let manager = ListenerManager::new(
        settings.workers,
        live.clone(),
        active.clone(),
        settings.drain_time,
    );
    let mut store = xds::Store::new(&bootstrap, &snapshot, manager, live, state.clone());
    if settings.cert_dir.is_some() || settings.ca.is_some() {
        store.serve_locally([
            crate::tls::secrets::WORKLOAD_SECRET.to_string(),
            crate::tls::secrets::ROOT_SECRET.to_string(),
        ]);
    }
    if !bootstrap.grpc_services.is_empty() {
        // pilot-agent's SDS server identifies nobody by node; send the bootstrap's when set.
        let node = xds::node(bootstrap.xds_node.as_ref()).unwrap_or_else(|_| {
            envoy_types::pb::envoy::config::core::v3::Node {
                id: "skiff".to_string(),
                user_agent_name: "skiff".to_string(),
                ..Default::default()
            }
        });
        store.set_sds(xds::SdsStreams::new(bootstrap.grpc_services.clone(), node));
    }
    store.start()?;
    let shared = xds::shared(store);
    if let Some(sds) = shared
        .0
        .lock()
        .expect("the xDS store lock is never poisoned")
        .sds_mut()
    {
        sds.bind(shared.clone());
    }
    match &bootstrap.dynamic {
        Some(dynamic) => {
            let node = xds::node(bootstrap.xds_node.as_ref()).map_err(XdsError::from)?;
            tracing::info!(node = %node.id, protocol = ?dynamic.ads.protocol, target = ?dynamic.ads.target, "connecting to the control plane");
            let ads = xds::start(dynamic, node, &settings.xds, shared.clone())?;
            // Set once, here: the admin state was created above with no stream.
            let _ = state.ads.set(ads);
        }
        None => state.live.store(true, std::sync::atomic::Ordering::Release),
    }
    tracing::info!(
        listeners = snapshot.listeners.len(),
        clusters = snapshot.clusters.len(),
        "all static listeners started"
    );

    let reason = wait_for_stop(&state).await;
    tracing::info!(reason, "shutting down: no new connections are accepted");
    shared
        .0
        .lock()
        .expect("the xDS store lock is never poisoned")
        .stop_listeners();
    if reason == "quitquitquit" {
        return Ok(());
    }
    let open = active.count();
    if open > 0 {
        tracing::info!(open, drain_time = ?settings.drain_time, "waiting for open connections");
        if tokio::time::timeout(settings.drain_time, active.wait_idle())
            .await
            .is_err()
        {
            tracing::info!(open = active.count(), "drain time over; closing the rest");
        }
    }
    Ok(())
}

/// How often `--cert-dir` files are checked for changes.
const CERT_DIR_POLL: Duration = Duration::from_secs(1);

/// Waits for the first of SIGTERM, SIGINT and `/quitquitquit`.
async fn wait_for_stop(state: &AdminState) -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = state.quit.notified() => "quitquitquit",
    }
}
