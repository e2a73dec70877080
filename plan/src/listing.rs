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
use lakevault_common::access::PathAccess;
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
    /// Owner, group, permissions and ACL, when the listing asked for them
    /// ([`Include::Permissions`], accounts with a hierarchical namespace). Boxed: most
    /// listings carry none, and entries are moved a lot.
    pub access: Option<Box<PathAccess>>,
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
            access: None,
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

/// What a hierarchical listing asks for besides the blobs' properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    Nothing,
    /// Blob index tags (`include=tags`).
    Tags,
    /// Owner, group, permissions and ACL (`include=permissions`, version 2020-06-12 and
    /// later, accounts with a hierarchical namespace only;
    /// <https://learn.microsoft.com/rest/api/storageservices/list-blobs>).
    Permissions,
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

/// The same page read for what the SDK's `BlobItem` drops: an HNS entry's access control
/// and resource type. Entries come in the same order as in [`LevelPage`].
#[derive(Deserialize)]
struct AccessPage {
    #[serde(rename = "Blobs", default)]
    blobs: AccessBlobs,
}

#[derive(Deserialize, Default)]
struct AccessBlobs {
    #[serde(rename = "$value", default)]
    entries: Vec<AccessItem>,
}

#[derive(Deserialize)]
enum AccessItem {
    Blob(AccessBlob),
    BlobPrefix(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct AccessBlob {
    #[serde(rename = "Properties")]
    properties: Option<AccessProperties>,
}

#[derive(Deserialize)]
struct AccessProperties {
    #[serde(rename = "ResourceType")]
    resource_type: Option<String>,
    #[serde(rename = "Owner")]
    owner: Option<String>,
    #[serde(rename = "Group")]
    group: Option<String>,
    #[serde(rename = "Permissions")]
    permissions: Option<String>,
    #[serde(rename = "Acl")]
    acl: Option<String>,
}

impl AccessItem {
    /// The entry's access control, when the listing carried it (an owner at least).
    fn into_access(self) -> Option<Box<PathAccess>> {
        let AccessItem::Blob(blob) = self else {
            return None;
        };
        let p = blob.properties?;
        Some(Box::new(PathAccess {
            directory: p.resource_type.as_deref() == Some("directory"),
            owner: p.owner?,
            group: p.group.unwrap_or_default(),
            permissions: p.permissions.unwrap_or_default(),
            acl: p.acl.unwrap_or_default(),
        }))
    }
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
    include: Include,
    page_size: Option<u32>,
) -> azure_core::Result<impl Stream<Item = azure_core::Result<LevelEntry>> + Send + 'static> {
    let mut extra = vec![("delimiter", "/".to_string())];
    // The generated client has no `permissions` include value: sent as an extra query
    // parameter, the only `include` of the request.
    if include == Include::Permissions {
        extra.push(("include", "permissions".to_string()));
    }
    let options = BlobContainerClientListBlobsOptions {
        include: (include == Include::Tags).then(|| vec![ListBlobsIncludeItem::Tags]),
        prefix: (!prefix.is_empty()).then_some(prefix),
        maxresults: max_results(page_size),
        method_options: PagerOptions {
            context: azure_core::http::Context::new().with_value(ExtraQuery(extra)),
            ..Default::default()
        },
        ..Default::default()
    };
    Ok(container
        .list_blobs(Some(options))?
        .into_pages()
        .and_then(move |page| async move {
            let body = page.into_body();
            let page: LevelPage = azure_core::xml::from_xml(&body)?;
            let mut access: Vec<Option<Box<PathAccess>>> = if include == Include::Permissions {
                let page: AccessPage = azure_core::xml::from_xml(&body)?;
                page.blobs
                    .entries
                    .into_iter()
                    .map(AccessItem::into_access)
                    .collect()
            } else {
                Vec::new()
            };
            access.resize(page.blobs.entries.len(), None);
            let entries: Vec<azure_core::Result<LevelEntry>> = page
                .blobs
                .entries
                .into_iter()
                .zip(access)
                .filter_map(|(e, access)| match e {
                    LevelItem::Blob(b) => ListedBlob::from_item(*b)
                        .map(|blob| LevelEntry::Blob(ListedBlob { access, ..blob })),
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
