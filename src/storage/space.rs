//! Free space on the filesystem that holds the data directory (uploads,
//! blobs on local disk, the SQLite database): what `/readyz` reports and
//! what a push with a declared length is measured against before any byte
//! of it is written.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Watches one filesystem's free space.
#[derive(Clone, Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    /// Below this many free bytes the disk counts as full.
    min_free: u64,
}

impl DiskSpace {
    pub fn new(dir: &Path, min_free: u64) -> DiskSpace {
        DiskSpace {
            dir: dir.to_path_buf(),
            min_free,
        }
    }

    /// Bytes an unprivileged writer may still use, and the filesystem's size.
    pub fn available(&self) -> io::Result<(u64, u64)> {
        let path = CString::new(self.dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: `path` is a NUL-terminated string and `stat` is a valid
        // place for the answer, read only when the call succeeded.
        let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: statvfs returned 0, so it filled `stat`.
        let stat = unsafe { stat.assume_init() };
        let unit = stat.f_frsize;
        Ok((
            stat.f_bavail.saturating_mul(unit),
            stat.f_blocks.saturating_mul(unit),
        ))
    }

    /// None while at least `min_free` bytes are free; else why the disk
    /// counts as full.
    pub fn full(&self) -> Option<String> {
        match self.available() {
            Ok((free, _)) if free >= self.min_free => None,
            Ok((free, total)) => Some(format!(
                "disk full: {free} of {total} bytes free under {} (fewer than storage.min_free_bytes = {})",
                self.dir.display(),
                self.min_free
            )),
            Err(e) => Some(format!("free space under {}: {e}", self.dir.display())),
        }
    }

    /// Whether `bytes` more could be written and still leave `min_free`;
    /// true when the free space cannot be read (the write will tell).
    pub fn fits(&self, bytes: u64) -> bool {
        match self.available() {
            Ok((free, _)) => free >= bytes.saturating_add(self.min_free),
            Err(_) => true,
        }
    }
}

/// Whether an I/O error says the filesystem (or the user's quota) is full.
pub fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
