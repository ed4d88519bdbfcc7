//! The certificate a listener presents, replaced when its files change.
//!
//! The files are polled rather than watched with inotify: a Kubernetes Secret volume (what
//! cert-manager writes to) swaps a directory symlink and never writes the files in place, so
//! only re-reading the paths sees every update. Handshakes read the current certificate
//! through an `ArcSwap`; connections already open keep the one they were made with.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::task::JoinHandle;

use crate::certificate::{CertificateError, CertificateFiles};

pub struct ReloadingCertificate {
    files: CertificateFiles,
    current: ArcSwap<CertifiedKey>,
    /// The files as they were just before the first read.
    loaded: Stamp,
}

/// What both files looked like when they were last read: a change of either means a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp([Option<FileStamp>; 2]);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    /// A file swapped for another (as a Secret volume does) may keep its size and time.
    #[cfg(unix)]
    inode: (u64, u64),
}

impl Stamp {
    fn of(files: &CertificateFiles) -> Self {
        Self(files.paths().map(FileStamp::of))
    }
}

impl FileStamp {
    /// `None` while the file is missing, for example in the middle of a swap.
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt as _;
            (metadata.dev(), metadata.ino())
        };
        Some(Self {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            #[cfg(unix)]
            inode,
        })
    }
}

/// Stops the reloading task when dropped.
pub struct Reloader(JoinHandle<()>);

impl Drop for Reloader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ReloadingCertificate {
    /// Reads the files once; a listener must not start without a certificate it can present.
    pub fn load(files: CertificateFiles) -> Result<Arc<Self>, CertificateError> {
        // Taken before the read, so that a change made while reading is seen as one.
        let loaded = Stamp::of(&files);
        let current = files.load()?;
        Ok(Arc::new(Self {
            files,
            current: ArcSwap::new(current),
            loaded,
        }))
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Checks the files every `every` and swaps in a new pair when they changed and load. A
    /// pair that does not load is logged and the previous certificate stays; it is tried again
    /// when the files change again (cert-manager may write the two files one after the other).
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> Reloader {
        let certificate = self.clone();
        Reloader(tokio::spawn(async move {
            let mut seen = certificate.loaded;
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let checking = certificate.clone();
                match tokio::task::spawn_blocking(move || checking.reload_if_changed(seen)).await {
                    Ok(stamp) => seen = stamp,
                    Err(error) => tracing::error!(%error, "the TLS certificate check failed"),
                }
            }
        }))
    }

    /// Reloads when the files differ from `seen`; returns what they look like now.
    fn reload_if_changed(&self, seen: Stamp) -> Stamp {
        let now = Stamp::of(&self.files);
        if now == seen {
            return now;
        }
        let [certificate, key] = self.files.paths();
        match self.files.load() {
            Ok(loaded) => {
                self.current.store(loaded);
                tracing::info!(
                    certificate = %certificate.display(),
                    key = %key.display(),
                    "TLS certificate reloaded; new connections get it"
                );
            }
            Err(error) => tracing::warn!(
                error = %Chain(&error),
                "the TLS certificate files changed but cannot be used; still presenting the previous certificate"
            ),
        }
        now
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The files only: the key must never reach a log.
impl fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCertificate")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// An error and its causes on one line, for a log field.
struct Chain<'a>(&'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::tests::{files_in, self_signed, write};

    #[test]
    fn swaps_in_a_changed_pair_and_keeps_the_old_one_when_the_new_one_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let files = files_in(dir.path());
        write(&files, &self_signed("first.test"));
        let certificate = ReloadingCertificate::load(files.clone()).unwrap();
        let first = certificate.current();
        let seen = certificate.loaded;
        assert_eq!(certificate.reload_if_changed(seen), seen);
        assert!(
            Arc::ptr_eq(&certificate.current(), &first),
            "unchanged files"
        );

        std::fs::write(&files.certificate.path, "half written").unwrap();
        let seen = certificate.reload_if_changed(seen);
        assert!(Arc::ptr_eq(&certificate.current(), &first), "bad pair");

        write(&files, &self_signed("second.test"));
        certificate.reload_if_changed(seen);
        let second = certificate.current();
        assert_ne!(second.cert[0], first.cert[0]);
    }

    #[test]
    fn a_missing_file_keeps_the_old_pair() {
        let dir = tempfile::tempdir().unwrap();
        let files = files_in(dir.path());
        write(&files, &self_signed("first.test"));
        let certificate = ReloadingCertificate::load(files.clone()).unwrap();
        let first = certificate.current();
        std::fs::remove_file(&files.private_key.path).unwrap();
        let seen = certificate.reload_if_changed(certificate.loaded);
        assert_eq!(seen.0[1], None);
        assert!(Arc::ptr_eq(&certificate.current(), &first));
    }
}
