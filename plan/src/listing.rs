//! Streaming container and blob listings. A listing is consumed page by page (at most
//! 5,000 entries in memory, and the next page read ahead), never collected. Besides the
//! flat listing there is the hierarchical one (`delimiter=/`): the blobs at one level and
//! the prefixes below it, which is how shards are found and how a shard of one directory
//! level is listed.
//!
//! List Blobs is sent here, not through the SDK's pager, and each page is read in one pass
//! ([`crate::page`]): the pager parses every page twice (once for its continuation, once
//! into a model of every property the service has), which was most of the planner's CPU.

use crate::page::Page;
use azure_core::http::{Method, Pipeline, Request, Url};
use azure_storage_blob::BlobServiceClient;
use futures::{Stream, TryStreamExt};
use lakevault_common::access::PathAccess;
use lakevault_common::storage::{AccountError, StorageAccount};
use std::collections::BTreeMap;

/// A blob as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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

/// The most entries one List Blobs page may hold.
pub const MAX_PAGE_SIZE: u32 = 5_000;

/// The service version listings are sent with (`include=permissions` needs 2020-06-12 or
/// later); the one the SDK's clients send.
const LIST_VERSION: &str = "2026-04-06";

/// What a listing asks for besides the blobs' properties.
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

/// A container to list: its URL and its account's pipeline (transport, retries,
/// authorization, request counting: the same as the SDK's clients).
#[derive(Clone)]
pub struct Lister {
    pipeline: Pipeline,
    url: Url,
}

impl std::fmt::Debug for Lister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lister")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl Lister {
    pub fn new(account: &StorageAccount, container: &str) -> Result<Self, AccountError> {
        Ok(Self {
            pipeline: account.pipeline().clone(),
            url: account.container(container)?.url().clone(),
        })
    }

    /// Every blob of the container (base blobs only), in the service's listing order, in
    /// pages of at most `page_size` entries (`None`: the service's maximum, 5,000).
    pub fn blobs(
        &self,
        prefix: Option<String>,
        include: Include,
        page_size: Option<u32>,
    ) -> impl Stream<Item = azure_core::Result<ListedBlob>> + Send + 'static {
        self.entries(ListQuery {
            prefix: prefix.unwrap_or_default(),
            delimiter: false,
            include,
            page_size,
        })
        .try_filter_map(|e| {
            futures::future::ready(Ok(match e {
                LevelEntry::Blob(b) => Some(b),
                LevelEntry::Prefix(_) => None,
            }))
        })
    }

    /// The blobs directly under `prefix` and the prefixes one `/` further down, in the
    /// service's listing order, in pages of at most `page_size` entries.
    pub fn level(
        &self,
        prefix: String,
        include: Include,
        page_size: Option<u32>,
    ) -> impl Stream<Item = azure_core::Result<LevelEntry>> + Send + 'static {
        self.entries(ListQuery {
            prefix,
            delimiter: true,
            include,
            page_size,
        })
    }

    fn entries(
        &self,
        query: ListQuery,
    ) -> impl Stream<Item = azure_core::Result<LevelEntry>> + Send + 'static {
        self.pages(query)
            .map_ok(|page| futures::stream::iter(page.into_entries().map(Ok)))
            .try_flatten()
    }

    /// The pages of one listing, each requested as soon as the one before it is parsed, while the caller works through that one: a listing waits for
    /// the service's latency once, not once per page and again for the work on each page,
    /// and holds at most two pages. A page read ahead and never asked for is abandoned
    /// with the stream.
    fn pages(
        &self,
        query: ListQuery,
    ) -> impl Stream<Item = azure_core::Result<Page>> + Send + 'static {
        let lister = self.clone();
        futures::stream::try_unfold(Some(NextPage::Marker(None)), move |next| {
            let (lister, query) = (lister.clone(), query.clone());
            async move {
                let page = match next {
                    None => return Ok(None),
                    Some(NextPage::Requested(pending)) => pending.wait().await?,
                    Some(NextPage::Marker(marker)) => {
                        lister.page(&query, marker.as_deref()).await?
                    }
                };
                let next = page.next_marker.clone().map(|marker| {
                    NextPage::Requested(ReadAhead::start(lister, query, Some(marker)))
                });
                Ok(Some((page, next)))
            }
        })
    }

    /// The container's URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Requests the first page of a flat listing under `prefix` (5,000 entries), and says
    /// how long it took and how much of that was parsing it here.
    pub async fn timed_first_page(
        &self,
        prefix: Option<String>,
        include: Include,
    ) -> azure_core::Result<PageTiming> {
        let query = ListQuery {
            prefix: prefix.unwrap_or_default(),
            delimiter: false,
            include,
            page_size: None,
        };
        let started = std::time::Instant::now();
        let (page, parse) = self.timed_page(&query, None).await?;
        Ok(PageTiming {
            entries: page.len(),
            more: page.next_marker.is_some(),
            total: started.elapsed(),
            parse,
        })
    }

    /// Requests and parses one page.
    async fn page(&self, query: &ListQuery, marker: Option<&str>) -> azure_core::Result<Page> {
        Ok(self.timed_page(query, marker).await?.0)
    }

    /// [`Self::page`], with the time spent parsing it.
    async fn timed_page(
        &self,
        query: &ListQuery,
        marker: Option<&str>,
    ) -> azure_core::Result<(Page, std::time::Duration)> {
        let mut url = self.url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("restype", "container")
                .append_pair("comp", "list");
            if !query.prefix.is_empty() {
                q.append_pair("prefix", &query.prefix);
            }
            if query.delimiter {
                q.append_pair("delimiter", "/");
            }
            match query.include {
                Include::Nothing => {}
                Include::Tags => {
                    q.append_pair("include", "tags");
                }
                Include::Permissions => {
                    q.append_pair("include", "permissions");
                }
            }
            if let Some(n) = query.page_size {
                q.append_pair("maxresults", &n.clamp(1, MAX_PAGE_SIZE).to_string());
            }
            if let Some(m) = marker {
                q.append_pair("marker", m);
            }
        }
        let mut request = Request::new(url, Method::Get);
        request.insert_header("accept", "application/xml");
        request.insert_header("x-ms-version", LIST_VERSION);
        let response = self
            .pipeline
            .send(&azure_core::http::Context::new(), &mut request, None)
            .await?;
        let body = response.into_body();
        let parsing = std::time::Instant::now();
        let page = crate::page::parse(&body).map_err(|e| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::DataConversion,
                format!("List Blobs answered a page that does not read: {e}"),
            )
        })?;
        Ok((page, parsing.elapsed()))
    }
}

/// How one listing page went ([`Lister::timed_first_page`]).
#[derive(Debug, Clone, Copy)]
pub struct PageTiming {
    pub entries: usize,
    /// The listing has more pages.
    pub more: bool,
    /// Request to parsed page.
    pub total: std::time::Duration,
    /// Parsing it, here.
    pub parse: std::time::Duration,
}

#[derive(Debug, Clone)]
struct ListQuery {
    prefix: String,
    delimiter: bool,
    include: Include,
    page_size: Option<u32>,
}

/// Where a listing goes on from.
enum NextPage {
    /// Requested when asked for: the first page, at once.
    Marker(Option<String>),
    /// Already requested.
    Requested(ReadAhead),
}

/// A page being requested in the background; the request is cancelled if dropped.
struct ReadAhead(tokio::task::JoinHandle<azure_core::Result<Page>>);

impl ReadAhead {
    fn start(lister: Lister, query: ListQuery, marker: Option<String>) -> Self {
        Self(tokio::spawn(async move {
            lister.page(&query, marker.as_deref()).await
        }))
    }

    async fn wait(mut self) -> azure_core::Result<Page> {
        match (&mut self.0).await {
            Ok(page) => page,
            Err(e) => Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                format!("reading a listing page: {e}"),
            )),
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.0.abort();
    }
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
