//! Serving a directory: poll it, and serve what it holds whenever it changes.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::time::MissedTickBehavior;

use super::{
    Server,
    resources::{self, SourceFile},
};
use crate::schema::Schema;

/// Polls `dir` every `poll` until aborted; see [`Server::watch_dir`].
///
/// Every poll reads the whole content of the resource files and compares it with the last read,
/// rather than comparing modification times: an edit within the file system's timestamp
/// granularity (a second on some) that keeps the size would otherwise be missed, and the
/// directories a test server serves are small.
pub(crate) async fn run(server: Server, dir: PathBuf, schema: Arc<Schema>, poll: Duration) {
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_read: Option<Vec<SourceFile>> = None;
    let mut last_read_error: Option<String> = None;
    loop {
        ticks.tick().await;
        let read = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || resources::read_dir(&dir)).await
        };
        let files = match read {
            Ok(Ok(files)) => files,
            Ok(Err(error)) => {
                // Said once, not at every poll.
                let message = error.to_string();
                if last_read_error.as_ref() != Some(&message) {
                    tracing::warn!(%error, "keeping the last good resources");
                    last_read_error = Some(message);
                }
                continue;
            }
            Err(join) => {
                tracing::warn!(error = %join, "reading the resource directory failed");
                continue;
            }
        };
        last_read_error = None;
        if last_read.as_ref() == Some(&files) {
            continue;
        }
        let parsed = {
            let schema = schema.clone();
            tokio::task::spawn_blocking(move || {
                let parsed = resources::parse_files(&files, &schema);
                (files, parsed)
            })
            .await
        };
        let Ok((files, parsed)) = parsed else {
            tracing::warn!(dir = %dir.display(), "parsing the resource directory failed");
            continue;
        };
        last_read = Some(files);
        match parsed {
            Ok(resources) => {
                server.set_resources(resources);
            }
            Err(error) => tracing::warn!(%error, "keeping the last good resources"),
        }
    }
}
