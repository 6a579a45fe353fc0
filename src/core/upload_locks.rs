//! One writer per upload at a time. Two requests that write to the same
//! upload at once would interleave their bytes; with this lock the second
//! waits, then finds the offset moved and is refused as out of order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct UploadLocks {
    locks: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

pub struct UploadGuard {
    id: String,
    lock: Arc<AsyncMutex<()>>,
    locks: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
    _held: OwnedMutexGuard<()>,
}

impl UploadLocks {
    pub async fn lock(&self, id: &str) -> UploadGuard {
        let lock = {
            let mut map = self.locks.lock().expect("upload lock map");
            map.entry(id.to_owned()).or_default().clone()
        };
        let held = lock.clone().lock_owned().await;
        UploadGuard {
            id: id.to_owned(),
            lock,
            locks: self.locks.clone(),
            _held: held,
        }
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        // Clones are only made under the map's lock, so the count is exact:
        // the map's copy, this guard's, and the one inside `_held`.
        let mut map = self.locks.lock().expect("upload lock map");
        if Arc::strong_count(&self.lock) <= 3 {
            map.remove(&self.id);
        }
    }
}
