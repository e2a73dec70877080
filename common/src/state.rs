//! The ledger's state documents (small JSON blobs in the `lakevault-state` container) on
//! any [`BlobStore`], so what is decided from them (which worker finishes a distributed
//! scan) runs the same on the service and on the in-memory store.

use crate::ledger::STATE_CONTAINER;
use crate::store::{BlobRef, BlobStore, Condition, ListOptions, StorageErrorCode, StoreError};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

/// The state documents of one account.
#[derive(Clone, Copy)]
pub struct StateStore<'a> {
    store: &'a dyn BlobStore,
}

impl std::fmt::Debug for StateStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("account", &self.store.alias())
            .finish()
    }
}

fn encoding(store: &dyn BlobStore, e: serde_json::Error) -> StoreError {
    StoreError::other(store.alias(), format!("state document: {e}"))
}

impl<'a> StateStore<'a> {
    pub fn new(store: &'a dyn BlobStore) -> Self {
        Self { store }
    }

    fn doc(name: &str) -> BlobRef<'_> {
        BlobRef::new(STATE_CONTAINER, name)
    }

    /// Writes a document, replacing any.
    pub async fn put<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        let body = serde_json::to_vec(value).map_err(|e| encoding(self.store, e))?;
        self.store.create_container(STATE_CONTAINER).await?;
        self.store
            .put(Self::doc(name), body, Condition::None)
            .await
            .map(|_| ())
    }

    /// Creates a document only if none exists: `false` when another writer got there
    /// first. This is what elects exactly one writer among racing ones.
    pub async fn create<T: Serialize>(&self, name: &str, value: &T) -> Result<bool, StoreError> {
        let body = serde_json::to_vec(value).map_err(|e| encoding(self.store, e))?;
        self.store.create_container(STATE_CONTAINER).await?;
        match self
            .store
            .put(Self::doc(name), body, Condition::IfAbsent)
            .await
        {
            Ok(_) => Ok(true),
            // Azure: 409 BlobAlreadyExists; the emulator may answer 412.
            Err(e) if e.is_conflict() || e.is_condition_not_met() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads a document; `None` if it does not exist.
    pub async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.store.get(Self::doc(name)).await {
            Ok((bytes, _)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| encoding(self.store, e)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names of the documents under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let listing = self.store.list(
            STATE_CONTAINER,
            ListOptions {
                prefix: Some(prefix.to_string()),
                ..Default::default()
            },
        );
        match listing.map_ok(|l| l.name).try_collect().await {
            Ok(names) => Ok(names),
            Err(e) if e.has_code(StorageErrorCode::ContainerNotFound) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::World;

    #[tokio::test]
    async fn documents_round_trip_and_create_elects_one_writer() {
        let world = World::new();
        let ops = world.account("ops");
        let state = StateStore::new(&ops);
        assert_eq!(state.list("jobs/").await.unwrap(), Vec::<String>::new());
        assert_eq!(state.get::<u32>("jobs/a").await.unwrap(), None);
        state.put("jobs/a", &1u32).await.unwrap();
        assert!(state.create("jobs/b", &2u32).await.unwrap());
        assert!(
            !state.create("jobs/b", &3u32).await.unwrap(),
            "second writer loses"
        );
        assert_eq!(state.get::<u32>("jobs/b").await.unwrap(), Some(2));
        assert_eq!(state.list("jobs/").await.unwrap(), vec!["jobs/a", "jobs/b"]);
    }
}
