//! HTTPS with rustls. The certificate and key files are polled for changes and
//! reloaded in place, so a certbot renewal takes effect for new connections without
//! a restart. A half-written pair (cert renewed, key not yet) fails to load and is
//! retried at the next poll; the old certificate stays in use meanwhile.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;

/// Use ring for rustls (no aws-lc C build). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub async fn load(cert: &Path, key: &Path) -> anyhow::Result<RustlsConfig> {
    install_crypto_provider();
    RustlsConfig::from_pem_file(cert, key).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot load TLS certificate {} / key {}: {e}",
            cert.display(),
            key.display()
        )
    })
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Poll `cert` and `key` every `every`; reload `config` when either changed.
pub fn spawn_reloader(
    config: RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = (stamp(&cert), stamp(&key));
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = (stamp(&cert), stamp(&key));
            if now == seen {
                continue;
            }
            match config.reload_from_pem_file(&cert, &key).await {
                Ok(()) => {
                    tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                    seen = now;
                }
                Err(e) => {
                    tracing::warn!(cert = %cert.display(), "TLS files changed but cannot be loaded yet ({e}); keeping the old certificate")
                }
            }
        }
    })
}
