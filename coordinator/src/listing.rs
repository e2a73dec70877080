//! Streaming container and blob listings. A listing is consumed page by page (at most
//! 5,000 entries in memory), never collected.

use azure_storage_blob::models::{
    BlobContainerClientListBlobsOptions, BlobItem, BlobType, ListBlobsIncludeItem,
};
use azure_storage_blob::{BlobContainerClient, BlobServiceClient};
use futures::{Stream, TryStreamExt};
use lakevault_common::record::{normalise_etag, rfc3339};
use std::collections::BTreeMap;

/// A blob as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBlob {
    pub name: String,
    pub etag: String,
    pub size: u64,
    pub last_modified: String,
    pub blob_type: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl ListedBlob {
    fn from_item(item: BlobItem) -> Option<Self> {
        let props = item.properties?;
        let tags = item
            .blob_tags
            .and_then(|t| t.blob_tag_set)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| Some((t.key?, t.value?)))
            .collect();
        Some(ListedBlob {
            name: item.name?,
            etag: props
                .etag
                .map(|e| normalise_etag(e.as_ref()))
                .unwrap_or_default(),
            size: props.content_length.unwrap_or(0),
            last_modified: props.last_modified.map(rfc3339).unwrap_or_default(),
            blob_type: props.blob_type.map(|t| match t {
                BlobType::BlockBlob => "BlockBlob".to_string(),
                other => format!("{other:?}"),
            }),
            tags,
        })
    }
}

/// Every blob of a container (base blobs only), in the service's listing order.
pub fn list_blobs(
    container: &BlobContainerClient,
    prefix: Option<String>,
    with_tags: bool,
) -> azure_core::Result<impl Stream<Item = azure_core::Result<ListedBlob>> + Send + 'static> {
    let include = with_tags.then(|| vec![ListBlobsIncludeItem::Tags]);
    let options = BlobContainerClientListBlobsOptions {
        include,
        prefix,
        ..Default::default()
    };
    Ok(container
        .list_blobs(Some(options))?
        .try_filter_map(|item| futures::future::ready(Ok(ListedBlob::from_item(item)))))
}

/// Names of every container of an account.
pub async fn list_container_names(service: &BlobServiceClient) -> azure_core::Result<Vec<String>> {
    service
        .list_containers(None)?
        .map_ok(|c| c.name.unwrap_or_default())
        .try_filter(|n| futures::future::ready(!n.is_empty()))
        .try_collect()
        .await
}
