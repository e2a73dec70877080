//! [`BlobStore`] on the Azure SDK: every request goes through the account's SDK clients
//! (its pipeline retries throttling and server errors; see `storage.rs`).

use super::{
    AccessControl, BlobProperties, BlobRef, BlobStore, Commit, Condition, ContentHeaders,
    CopyFromUrl, ListOptions, Listed, PutFromUrl, SnapshotTaken, StorageErrorCode, StoreError,
    Transport,
};
use crate::error::describe;
use crate::extra_headers::ExtraHeaders;
use crate::record::{normalise_etag, rfc3339};
use crate::storage::{CopySource, StorageAccount};
use azure_core::http::{ClientMethodOptions, Etag, RequestContent};
use azure_storage_blob::BlobClient;
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientAcquireLeaseResultHeaders,
    BlobClientCreateSnapshotOptions, BlobClientCreateSnapshotResultHeaders,
    BlobClientDeleteOptions, BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders,
    BlobClientSetTagsOptions, BlobClientStartCopyFromUrlOptions,
    BlobClientStartCopyFromUrlResultHeaders, BlobContainerClientListBlobsOptions, BlobTag,
    BlobTags, BlobType, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientStageBlockFromUrlOptions, BlockBlobClientUploadBlobFromUrlOptions,
    BlockBlobClientUploadOptions, BlockLookupList, CopyStatus, DeleteSnapshotsOptionType,
    HttpRange, ListBlobsIncludeItem,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// One account of the Blob service, through the SDK.
#[derive(Debug, Clone)]
pub struct AzureStore {
    account: StorageAccount,
}

impl AzureStore {
    pub fn new(account: StorageAccount) -> Self {
        Self { account }
    }

    pub fn account(&self) -> &StorageAccount {
        &self.account
    }

    fn error(&self, e: &azure_core::Error) -> StoreError {
        from_sdk(&self.account.alias, e)
    }

    fn client(&self, blob: BlobRef<'_>) -> Result<BlobClient, StoreError> {
        let client = self
            .account
            .blob(blob.container, blob.name)
            .map_err(|e| StoreError::other(&self.account.alias, e.to_string()))?;
        match blob.snapshot {
            None => Ok(client),
            Some(s) => client.with_snapshot(s).map_err(|e| self.error(&e)),
        }
    }
}

/// The typed error of an SDK failure on `account`.
pub fn from_sdk(account: &str, e: &azure_core::Error) -> StoreError {
    use azure_core::error::ErrorKind;
    let (transport, status, code) = match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => (
            Transport::Answered,
            Some(u16::from(*status)),
            error_code
                .as_deref()
                .map(|c| c.parse::<StorageErrorCode>().unwrap_or_else(|e| match e {})),
        ),
        ErrorKind::Connection | ErrorKind::Io => (Transport::Connection, None, None),
        ErrorKind::Credential => (Transport::Credential, None, None),
        _ => (Transport::Other, None, None),
    };
    StoreError {
        account: account.to_string(),
        transport,
        status,
        code,
        message: describe(e),
    }
}

fn etag(value: &str) -> Etag {
    Etag::from(format!("\"{}\"", normalise_etag(value)))
}

/// `(If-Match, If-None-Match)` for a condition.
fn conditions(condition: &Condition) -> (Option<Etag>, Option<Etag>) {
    match condition {
        Condition::None => (None, None),
        Condition::IfMatch(e) => (Some(etag(e)), None),
        Condition::IfAbsent => (None, Some(Etag::from("*"))),
    }
}

/// The `x-ms-tags` value of a tag set (keys and values percent-encoded).
pub fn tags_header(tags: &BTreeMap<String, String>) -> Option<String> {
    let pairs: Vec<String> = tags
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                crate::record::encode_tag_part(k),
                crate::record::encode_tag_part(v)
            )
        })
        .collect();
    (!pairs.is_empty()).then(|| pairs.join("&"))
}

fn tag_map(tags: BlobTags) -> BTreeMap<String, String> {
    tags.blob_tag_set
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| Some((t.key?, t.value?)))
        .collect()
}

/// `x-ms-copy-source-authorization` of a request that reads `source` (a bearer token; a
/// SAS travels in the URL instead).
fn source_authorization(source: &CopySource) -> Option<String> {
    source
        .authorization
        .as_ref()
        .map(|a| a.expose().to_string())
}

fn copy_context(source: &CopySource) -> ClientMethodOptions<'static> {
    let mut extra = ExtraHeaders::default().with("x-ms-requires-sync", "true");
    if let Some(auth) = &source.authorization {
        extra = extra.with("x-ms-copy-source-authorization", auth.expose());
    }
    ClientMethodOptions {
        context: extra.into_context(),
    }
}

/// The service version of dfs requests (Path - Create with owner, group and ACL headers
/// needs 2020-06-12 or later).
const DFS_VERSION: &str = "2025-11-05";

impl AzureStore {
    /// Sends one dfs request; the answer must be a success.
    async fn dfs(
        &self,
        method: azure_core::http::Method,
        blob: BlobRef<'_>,
        query: (&str, &str),
        headers: Vec<(&'static str, String)>,
    ) -> Result<(), StoreError> {
        let mut url = self.account.dfs_url(blob.container, blob.name);
        url.query_pairs_mut().append_pair(query.0, query.1);
        let mut request = azure_core::http::Request::new(url, method);
        request.insert_header("x-ms-version", DFS_VERSION);
        for (name, value) in headers {
            request.insert_header(name, value);
        }
        request.set_body(Vec::<u8>::new());
        self.account
            .pipeline()
            .send(&azure_core::http::Context::new(), &mut request, None)
            .await
            .map(|_| ())
            .map_err(|e| self.error(&e))
    }
}

#[async_trait::async_trait]
impl BlobStore for AzureStore {
    async fn create_directory(
        &self,
        blob: BlobRef<'_>,
        condition: Condition,
    ) -> Result<(), StoreError> {
        let headers = match condition {
            Condition::None => vec![],
            Condition::IfAbsent => vec![("if-none-match", "*".to_string())],
            Condition::IfMatch(e) => vec![("if-match", format!("\"{}\"", normalise_etag(&e)))],
        };
        self.dfs(
            azure_core::http::Method::Put,
            blob,
            ("resource", "directory"),
            headers,
        )
        .await
    }

    async fn set_access_control(
        &self,
        blob: BlobRef<'_>,
        access: &AccessControl<'_>,
    ) -> Result<(), StoreError> {
        let mut headers = vec![("x-ms-acl", access.acl.to_string())];
        if let Some(owner) = access.owner {
            headers.push(("x-ms-owner", owner.to_string()));
        }
        if let Some(group) = access.group {
            headers.push(("x-ms-group", group.to_string()));
        }
        self.dfs(
            azure_core::http::Method::Patch,
            blob,
            ("action", "setAccessControl"),
            headers,
        )
        .await
    }

    fn alias(&self) -> &str {
        &self.account.alias
    }

    async fn create_container(&self, container: &str) -> Result<(), StoreError> {
        self.account
            .ensure_container(container)
            .await
            .map_err(|e| self.error(&e))
    }

    async fn properties(&self, blob: BlobRef<'_>) -> Result<BlobProperties, StoreError> {
        let p = self
            .client(blob)?
            .get_properties(None)
            .await
            .map_err(|e| self.error(&e))?;
        Ok(BlobProperties {
            etag: p
                .etag()
                .ok()
                .flatten()
                .map(|e| normalise_etag(e.as_ref()))
                .unwrap_or_default(),
            size: p.content_length().ok().flatten().unwrap_or(0),
            last_modified: p
                .last_modified()
                .ok()
                .flatten()
                .map(rfc3339)
                .unwrap_or_default(),
            blob_type: match p.blob_type().ok().flatten() {
                Some(BlobType::BlockBlob) | None => "BlockBlob".to_string(),
                Some(other) => format!("{other:?}"),
            },
            headers: ContentHeaders {
                content_type: p.content_type().ok().flatten(),
                content_encoding: p.content_encoding().ok().flatten(),
                content_language: p.content_language().ok().flatten(),
                content_disposition: p.content_disposition().ok().flatten(),
                cache_control: p.cache_control().ok().flatten(),
                content_md5: p.content_md5().ok().flatten(),
            },
            metadata: p.metadata().unwrap_or_default().into_iter().collect(),
        })
    }

    async fn tags(&self, blob: BlobRef<'_>) -> Result<BTreeMap<String, String>, StoreError> {
        let response = self
            .client(blob)?
            .get_tags(None)
            .await
            .map_err(|e| self.error(&e))?;
        Ok(tag_map(response.into_model().map_err(|e| self.error(&e))?))
    }

    async fn set_tags(
        &self,
        blob: BlobRef<'_>,
        tags: &BTreeMap<String, String>,
        condition: Condition,
    ) -> Result<(), StoreError> {
        let body = BlobTags {
            blob_tag_set: Some(
                tags.iter()
                    .map(|(key, value)| BlobTag {
                        key: Some(key.clone()),
                        value: Some(value.clone()),
                    })
                    .collect(),
            ),
        };
        let content: RequestContent<BlobTags, _> = body.try_into().map_err(|e| self.error(&e))?;
        let (if_match, _) = conditions(&condition);
        if condition == Condition::IfAbsent {
            return Err(StoreError::other(
                self.alias(),
                "Set Blob Tags needs an existing blob; `If-None-Match: *` cannot hold",
            ));
        }
        let options = BlobClientSetTagsOptions {
            if_match,
            ..Default::default()
        };
        self.client(blob)?
            .set_tags(content, Some(options))
            .await
            .map(|_| ())
            .map_err(|e| self.error(&e))
    }

    async fn snapshot(
        &self,
        blob: BlobRef<'_>,
        condition: Condition,
    ) -> Result<SnapshotTaken, StoreError> {
        let (if_match, if_none_match) = conditions(&condition);
        let options = BlobClientCreateSnapshotOptions {
            if_match,
            if_none_match,
            ..Default::default()
        };
        let response = self
            .client(blob)?
            .create_snapshot(Some(options))
            .await
            .map_err(|e| self.error(&e))?;
        let snapshot = response
            .snapshot()
            .map_err(|e| self.error(&e))?
            .ok_or_else(|| {
                StoreError::other(self.alias(), "Snapshot Blob returned no snapshot id")
            })?;
        Ok(SnapshotTaken {
            snapshot,
            etag: response
                .etag()
                .ok()
                .flatten()
                .map(|e| normalise_etag(e.as_ref()))
                .unwrap_or_default(),
            last_modified: response
                .last_modified()
                .ok()
                .flatten()
                .map(rfc3339)
                .unwrap_or_default(),
        })
    }

    async fn delete(
        &self,
        blob: BlobRef<'_>,
        condition: Condition,
        with_snapshots: bool,
    ) -> Result<(), StoreError> {
        let (if_match, if_none_match) = conditions(&condition);
        let options = BlobClientDeleteOptions {
            if_match,
            if_none_match,
            delete_snapshots: (with_snapshots && blob.snapshot.is_none())
                .then_some(DeleteSnapshotsOptionType::Include),
            ..Default::default()
        };
        self.client(blob)?
            .delete(Some(options))
            .await
            .map(|_| ())
            .map_err(|e| self.error(&e))
    }

    async fn copy_source(
        &self,
        blob: BlobRef<'_>,
        valid_for: Duration,
    ) -> Result<CopySource, StoreError> {
        self.account
            .copy_source(blob.container, blob.name, blob.snapshot, valid_for)
            .await
            .map_err(|e| self.error(&e))
    }

    async fn copy_from_url(
        &self,
        blob: BlobRef<'_>,
        request: CopyFromUrl<'_>,
    ) -> Result<(), StoreError> {
        let (if_match, if_none_match) = conditions(&request.condition);
        let options = BlobClientStartCopyFromUrlOptions {
            source_if_match: request.source_if_match.map(etag),
            if_match,
            if_none_match,
            blob_tags_string: request.tags.and_then(tags_header),
            tier: request.tier,
            method_options: copy_context(request.source),
            ..Default::default()
        };
        let response = self
            .client(blob)?
            .start_copy_from_url(request.source.url.clone(), Some(options))
            .await
            .map_err(|e| self.error(&e))?;
        match response.copy_status() {
            Ok(Some(CopyStatus::Success)) | Ok(None) => Ok(()),
            Ok(Some(other)) => Err(StoreError {
                transport: Transport::Answered,
                status: Some(202),
                code: None,
                message: format!("Copy Blob From URL finished with status {other:?}"),
                account: self.alias().to_string(),
            }),
            Err(e) => Err(self.error(&e)),
        }
    }

    async fn put_from_url(
        &self,
        blob: BlobRef<'_>,
        request: PutFromUrl<'_>,
    ) -> Result<(), StoreError> {
        let (if_match, if_none_match) = conditions(&request.condition);
        let h = request.headers;
        let metadata: HashMap<String, String> = request.metadata.into_iter().collect();
        let options = BlockBlobClientUploadBlobFromUrlOptions {
            source_if_match: request.source_if_match.map(etag),
            if_match,
            if_none_match,
            // The content headers are the ones given (read from the version copied), not
            // whatever the source carries by the time the service reads it.
            copy_source_blob_properties: Some(false),
            blob_cache_control: h.cache_control,
            blob_content_disposition: h.content_disposition,
            blob_content_encoding: h.content_encoding,
            blob_content_language: h.content_language,
            blob_content_md5: h.content_md5,
            blob_content_type: h.content_type,
            metadata: (!metadata.is_empty()).then_some(metadata),
            blob_tags_string: request.tags.and_then(tags_header),
            tier: request.tier,
            copy_source_authorization: source_authorization(request.source),
            ..Default::default()
        };
        self.client(blob)?
            .block_blob_client()
            .upload_blob_from_url(request.source.url.clone(), Some(options))
            .await
            .map(|_| ())
            .map_err(|e| self.error(&e))
    }

    async fn stage_block_from_url(
        &self,
        blob: BlobRef<'_>,
        block_id: &[u8],
        source: &CopySource,
        source_if_match: Option<&str>,
        offset: u64,
        length: u64,
    ) -> Result<(), StoreError> {
        let options = BlockBlobClientStageBlockFromUrlOptions {
            source_range: Some(HttpRange::new(offset, length)),
            source_if_match: source_if_match.map(etag),
            copy_source_authorization: source_authorization(source),
            ..Default::default()
        };
        self.client(blob)?
            .block_blob_client()
            .stage_block_from_url(block_id, 0, source.url.clone(), Some(options))
            .await
            .map(|_| ())
            .map_err(|e| self.error(&e))
    }

    async fn stage_block(
        &self,
        blob: BlobRef<'_>,
        block_id: &[u8],
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        let length = bytes.len() as u64;
        self.client(blob)?
            .block_blob_client()
            .stage_block(block_id, length, RequestContent::from(bytes), None)
            .await
            .map(|_| ())
            .map_err(|e| self.error(&e))
    }

    async fn commit_blocks(
        &self,
        blob: BlobRef<'_>,
        block_ids: &[Vec<u8>],
        commit: Commit<'_>,
    ) -> Result<(), StoreError> {
        let list = BlockLookupList {
            latest: Some(block_ids.to_vec()),
            ..Default::default()
        };
        let content: RequestContent<BlockLookupList, _> =
            list.try_into().map_err(|e| self.error(&e))?;
        let (if_match, if_none_match) = conditions(&commit.condition);
        let h = commit.headers;
        let metadata: HashMap<String, String> = commit.metadata.into_iter().collect();
        let options = BlockBlobClientCommitBlockListOptions {
            blob_cache_control: h.cache_control,
            blob_content_disposition: h.content_disposition,
            blob_content_encoding: h.content_encoding,
            blob_content_language: h.content_language,
            blob_content_md5: h.content_md5,
            blob_content_type: h.content_type,
            blob_tags_string: commit.tags.and_then(tags_header),
            metadata: (!metadata.is_empty()).then_some(metadata),
            tier: commit.tier,
            if_match,
            if_none_match,
            ..Default::default()
        };
        self.client(blob)?
            .block_blob_client()
            .commit_block_list(content, Some(options))
            .await
            .map(|_| ())
            .map_err(|e| self.error(&e))
    }

    async fn read_range(
        &self,
        blob: BlobRef<'_>,
        offset: u64,
        length: u64,
        if_match: Option<&str>,
    ) -> Result<Vec<u8>, StoreError> {
        let options = BlobClientDownloadOptions {
            range: Some(HttpRange::new(offset, length)),
            if_match: if_match.map(etag),
            parallel: std::num::NonZero::new(1),
            ..Default::default()
        };
        let mut body = self
            .client(blob)?
            .download(Some(options))
            .await
            .map_err(|e| self.error(&e))?
            .body;
        let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| self.error(&e))?);
        }
        Ok(bytes)
    }

    async fn acquire_lease(
        &self,
        blob: BlobRef<'_>,
        duration: Duration,
        proposed_id: &str,
    ) -> Result<String, StoreError> {
        let seconds = duration.as_secs().clamp(15, 60);
        let options = BlobClientAcquireLeaseOptions {
            proposed_lease_id: Some(proposed_id.to_string()),
            ..Default::default()
        };
        let response = self
            .client(blob)?
            .acquire_lease(seconds as i32, Some(options))
            .await
            .map_err(|e| self.error(&e))?;
        Ok(response
            .lease_id()
            .ok()
            .flatten()
            .unwrap_or_else(|| proposed_id.to_string()))
    }

    async fn renew_lease(&self, blob: BlobRef<'_>, lease_id: &str) -> Result<(), StoreError> {
        self.client(blob)?
            .renew_lease(lease_id.to_string(), None)
            .await
            .map(|_| ())
            .map_err(|e| self.error(&e))
    }

    async fn release_lease(&self, blob: BlobRef<'_>, lease_id: &str) -> Result<(), StoreError> {
        self.client(blob)?
            .release_lease(lease_id.to_string(), None)
            .await
            .map(|_| ())
            .map_err(|e| self.error(&e))
    }

    async fn put(
        &self,
        blob: BlobRef<'_>,
        bytes: Vec<u8>,
        condition: Condition,
    ) -> Result<String, StoreError> {
        let (if_match, if_none_match) = conditions(&condition);
        let options = BlockBlobClientUploadOptions {
            if_match,
            if_none_match,
            ..Default::default()
        };
        let result = self
            .client(blob)?
            .block_blob_client()
            .upload(RequestContent::from(bytes), Some(options))
            .await
            .map_err(|e| self.error(&e))?;
        Ok(result
            .etag
            .map(|e| normalise_etag(e.as_ref()))
            .unwrap_or_default())
    }

    async fn get(&self, blob: BlobRef<'_>) -> Result<(Vec<u8>, String), StoreError> {
        let client = self.client(blob)?;
        let response = client.download(None).await.map_err(|e| self.error(&e))?;
        let etag = response
            .properties
            .etag
            .as_ref()
            .map(|e| normalise_etag(e.as_ref()))
            .unwrap_or_default();
        let mut body = response.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| self.error(&e))?);
        }
        Ok((bytes, etag))
    }

    fn list<'a>(
        &'a self,
        container: &'a str,
        options: ListOptions,
    ) -> BoxStream<'a, Result<Listed, StoreError>> {
        let client = match self.account.container(container) {
            Ok(c) => c,
            Err(e) => {
                let e = StoreError::other(self.alias(), e.to_string());
                return futures::stream::once(async move { Err(e) }).boxed();
            }
        };
        let mut include = Vec::new();
        if options.tags {
            include.push(ListBlobsIncludeItem::Tags);
        }
        if options.snapshots {
            include.push(ListBlobsIncludeItem::Snapshots);
        }
        let sdk_options = BlobContainerClientListBlobsOptions {
            include: (!include.is_empty()).then_some(include),
            prefix: options.prefix,
            maxresults: options.page_size.map(|n| n.clamp(1, 5000) as i32),
            ..Default::default()
        };
        let pager = match client.list_blobs(Some(sdk_options)) {
            Ok(p) => p,
            Err(e) => {
                let e = self.error(&e);
                return futures::stream::once(async move { Err(e) }).boxed();
            }
        };
        pager
            .map_err(move |e| from_sdk(&self.account.alias, &e))
            .try_filter_map(|item| async move {
                let (Some(name), Some(props)) = (item.name, item.properties) else {
                    return Ok(None);
                };
                Ok(Some(Listed {
                    name,
                    snapshot: item.snapshot,
                    etag: props
                        .etag
                        .map(|e| normalise_etag(e.as_ref()))
                        .unwrap_or_default(),
                    size: props.content_length.unwrap_or(0),
                    last_modified: props.last_modified.map(rfc3339).unwrap_or_default(),
                    tags: item.blob_tags.map(tag_map).unwrap_or_default(),
                    content_md5: props.content_md5.filter(|m| !m.is_empty()),
                }))
            })
            .boxed()
    }
}
