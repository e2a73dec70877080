//! Streaming container and blob listings. A listing is consumed page by page (at most
//! 5,000 entries in memory), never collected. Besides the flat listing there is the
//! hierarchical one (`delimiter=/`): the blobs at one level and the prefixes below it,
//! which is how shards are found and how a shard of one directory level is listed.

use azure_core::http::pager::PagerOptions;
use azure_storage_blob::models::{
    BlobContainerClientListBlobsOptions, BlobItem, BlobName, BlobType, ListBlobsIncludeItem,
};
use azure_storage_blob::{BlobContainerClient, BlobServiceClient};
use futures::{Stream, TryStreamExt};
use lakevault_common::extra_headers::ExtraQuery;
use lakevault_common::record::{normalise_etag, rfc3339};
use serde::Deserialize;
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
    /// Content-MD5 as stored (base64), when the blob has one.
    pub content_md5: Option<String>,
}

impl ListedBlob {
    pub fn from_item(item: BlobItem) -> Option<Self> {
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
            content_md5: props
                .content_md5
                .filter(|m| !m.is_empty())
                .map(azure_core::base64::encode),
            blob_type: props.blob_type.map(|t| match t {
                BlobType::BlockBlob => "BlockBlob".to_string(),
                other => format!("{other:?}"),
            }),
            tags,
        })
    }
}

/// Every blob of a container (base blobs only), in the service's listing order, in pages
/// of at most `page_size` entries (`None`: the service's maximum, 5,000).
pub fn list_blobs(
    container: &BlobContainerClient,
    prefix: Option<String>,
    with_tags: bool,
    page_size: Option<u32>,
) -> azure_core::Result<impl Stream<Item = azure_core::Result<ListedBlob>> + Send + 'static> {
    let include = with_tags.then(|| vec![ListBlobsIncludeItem::Tags]);
    let options = BlobContainerClientListBlobsOptions {
        include,
        prefix,
        maxresults: max_results(page_size),
        ..Default::default()
    };
    Ok(container
        .list_blobs(Some(options))?
        .try_filter_map(|item| futures::future::ready(Ok(ListedBlob::from_item(item)))))
}

/// The most entries one List Blobs page may hold.
pub const MAX_PAGE_SIZE: u32 = 5_000;

fn max_results(page_size: Option<u32>) -> Option<i32> {
    page_size.map(|n| n.clamp(1, MAX_PAGE_SIZE) as i32)
}

/// One entry of a hierarchical listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelEntry {
    Blob(ListedBlob),
    /// A virtual directory: every name below it shares this prefix (ends with `/`).
    Prefix(String),
}

/// The page of a hierarchical listing. The generated model has no `BlobPrefix`, and blobs
/// and prefixes come interleaved in name order, so the page is read here as one sequence.
#[derive(Deserialize)]
struct LevelPage {
    #[serde(rename = "Blobs", default)]
    blobs: LevelBlobs,
}

#[derive(Deserialize, Default)]
struct LevelBlobs {
    #[serde(rename = "$value", default)]
    entries: Vec<LevelItem>,
}

#[derive(Deserialize)]
enum LevelItem {
    Blob(Box<BlobItem>),
    BlobPrefix(PrefixItem),
}

#[derive(Deserialize)]
struct PrefixItem {
    #[serde(rename = "Name")]
    name: BlobName,
}

impl PrefixItem {
    /// The prefix, percent-decoded when the service encoded it (names with characters XML
    /// cannot carry).
    fn into_name(self) -> Option<String> {
        let content = self.name.content?;
        if self.name.encoded == Some(true) {
            percent_encoding::percent_decode_str(&content)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        } else {
            Some(content)
        }
    }
}

/// The blobs directly under `prefix` and the prefixes one `/` further down, in the
/// service's listing order, in pages of at most `page_size` entries.
pub fn list_level(
    container: &BlobContainerClient,
    prefix: String,
    with_tags: bool,
    page_size: Option<u32>,
) -> azure_core::Result<impl Stream<Item = azure_core::Result<LevelEntry>> + Send + 'static> {
    let include = with_tags.then(|| vec![ListBlobsIncludeItem::Tags]);
    let options = BlobContainerClientListBlobsOptions {
        include,
        prefix: (!prefix.is_empty()).then_some(prefix),
        maxresults: max_results(page_size),
        method_options: PagerOptions {
            context: azure_core::http::Context::new()
                .with_value(ExtraQuery(vec![("delimiter", "/".into())])),
            ..Default::default()
        },
        ..Default::default()
    };
    Ok(container
        .list_blobs(Some(options))?
        .into_pages()
        .and_then(|page| async move {
            let body = page.into_body();
            let page: LevelPage = azure_core::xml::from_xml(&body)?;
            let entries: Vec<azure_core::Result<LevelEntry>> = page
                .blobs
                .entries
                .into_iter()
                .filter_map(|e| match e {
                    LevelItem::Blob(b) => ListedBlob::from_item(*b).map(LevelEntry::Blob),
                    LevelItem::BlobPrefix(p) => p.into_name().map(LevelEntry::Prefix),
                })
                .map(Ok)
                .collect();
            Ok(futures::stream::iter(entries))
        })
        .try_flatten())
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
