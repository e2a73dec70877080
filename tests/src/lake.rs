//! A sample data lake: seeding source containers, changing a few blobs, and verifying a
//! backup blob by blob (content hash, content type, metadata with its exact key case, user
//! tags, and lakevault's record of the source ETag).

use anyhow::{Context, bail};
use azure_core::http::RequestContent;
use azure_storage_blob::models::{
    BlobContainerClientListBlobsOptions, BlockBlobClientUploadOptions, ListBlobsIncludeItem,
};
use futures::{StreamExt, TryStreamExt};
use lakevault_common::record::{BackupRecord, user_tags};
use lakevault_common::storage::StorageAccount;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// What to seed.
#[derive(Debug, Clone)]
pub struct LakeSpec {
    pub containers: Vec<String>,
    /// Small and medium blobs in total, spread over the containers.
    pub blobs: usize,
    /// Size of the one large blob (above the 256 MiB single-copy limit), 0 for none.
    pub large_bytes: u64,
    pub seed: u64,
}

impl LakeSpec {
    pub fn demo() -> Self {
        Self {
            containers: vec!["raw".into(), "curated".into(), "logs-2026".into()],
            blobs: 3000,
            large_bytes: 300 * 1024 * 1024,
            seed: 7,
        }
    }
}

/// Blob names like a real lake: nested partitions, spaces, non-ASCII, punctuation.
pub fn blob_name(i: usize) -> String {
    let year = 2020 + (i % 6);
    let month = 1 + (i / 7) % 12;
    match i % 10 {
        0 => format!("sales/year={year}/month={month:02}/part-{i:05}.parquet"),
        1 => format!("reports/Quarterly Report {i} (final).pdf"),
        2 => format!("données/été/fichier-{i}.csv"),
        3 => format!("日本/データ_{i}.json"),
        4 => format!("logs/{year}/{month:02}/app log #{i}.txt"),
        5 => format!("images/cats & dogs/photo+{i}.jpg"),
        6 => format!("deep/a/b/c/d/e/f/g/{i}.bin"),
        7 => format!("emoji/🚀 launch {i}.md"),
        8 => format!("percent/100%_done_{i}.txt"),
        _ => format!("flat-{i:06}.dat"),
    }
}

fn size_for(i: usize, rng: &mut impl Rng) -> usize {
    match i % 50 {
        0 => rng.random_range(1_000_000..4_000_000),
        1 => 0,
        _ => rng.random_range(16..48_000),
    }
}

fn content(seed: u64, i: usize, len: usize) -> Vec<u8> {
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut buf = vec![0u8; len];
    rng.fill(&mut buf[..]);
    buf
}

/// Uploads one blob with a content type, metadata and (sometimes) index tags.
async fn upload(
    account: &StorageAccount,
    container: &str,
    name: &str,
    body: Vec<u8>,
    i: usize,
) -> anyhow::Result<()> {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("source".to_string(), "seed".to_string());
    metadata.insert("index".to_string(), i.to_string());
    let options = BlockBlobClientUploadOptions {
        blob_content_type: Some(
            if name.ends_with(".json") {
                "application/json"
            } else {
                "application/octet-stream"
            }
            .into(),
        ),
        metadata: Some(metadata),
        blob_tags_string: i
            .is_multiple_of(5)
            .then(|| format!("team=data&tier=t{}", i % 3)),
        // Every content header a lake tool sets, on some blobs.
        blob_content_encoding: i.is_multiple_of(7).then(|| "gzip".to_string()),
        blob_content_language: i.is_multiple_of(11).then(|| "fr-CA".to_string()),
        blob_cache_control: i.is_multiple_of(13).then(|| "max-age=3600".to_string()),
        blob_content_disposition: i
            .is_multiple_of(17)
            .then(|| "attachment; filename=\"report.pdf\"".to_string()),
        ..Default::default()
    };
    account
        .blob(container, name)?
        .upload(RequestContent::from(body), Some(options))
        .await
        .with_context(|| format!("uploading {container}/{name}"))?;
    Ok(())
}

/// Writes one blob as it is, nothing else set.
pub async fn put(
    account: &StorageAccount,
    container: &str,
    name: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    account
        .blob(container, name)?
        .upload(RequestContent::from(body.to_vec()), None)
        .await
        .with_context(|| format!("uploading {container}/{name}"))?;
    Ok(())
}

/// Writes a directory as an account with a hierarchical namespace holds one when seen
/// through the Blob service: an empty blob with metadata `hdi_isfolder=true`.
pub async fn put_directory(
    account: &StorageAccount,
    container: &str,
    name: &str,
) -> anyhow::Result<()> {
    let options = BlockBlobClientUploadOptions {
        metadata: Some(std::collections::HashMap::from([(
            "hdi_isfolder".to_string(),
            "true".to_string(),
        )])),
        ..Default::default()
    };
    account
        .blob(container, name)?
        .upload(RequestContent::from(Vec::new()), Some(options))
        .await
        .with_context(|| format!("creating directory {container}/{name}"))?;
    Ok(())
}

/// Seeds the lake; returns (blobs, bytes).
pub async fn seed(account: &StorageAccount, spec: &LakeSpec) -> anyhow::Result<(u64, u64)> {
    for c in &spec.containers {
        account.ensure_container(c).await?;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let plan: Vec<(String, String, usize, usize)> = (0..spec.blobs)
        .map(|i| {
            let c = spec.containers[i % spec.containers.len()].clone();
            (c, blob_name(i), size_for(i, &mut rng), i)
        })
        .collect();
    let bytes: u64 = plan.iter().map(|p| p.2 as u64).sum();
    let seed = spec.seed;
    futures::stream::iter(plan)
        .map(
            |(c, n, len, i)| async move { upload(account, &c, &n, content(seed, i, len), i).await },
        )
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let mut total = (spec.blobs as u64, bytes);
    if spec.large_bytes > 0 {
        let body = content(spec.seed, usize::MAX, spec.large_bytes as usize);
        upload(
            account,
            &spec.containers[0],
            "large/big file ü.bin",
            body,
            1,
        )
        .await?;
        total.0 += 1;
        total.1 += spec.large_bytes;
    }
    Ok(total)
}

/// Rewrites `count` existing blobs with new content; returns their names.
pub async fn modify(
    account: &StorageAccount,
    spec: &LakeSpec,
    count: usize,
    round: u64,
) -> anyhow::Result<Vec<String>> {
    let mut changed = Vec::new();
    for k in 0..count {
        let i = 3 + k * 17;
        let c = &spec.containers[i % spec.containers.len()];
        let name = blob_name(i);
        upload(
            account,
            c,
            &name,
            content(spec.seed ^ (round + 1), i, 1234 + k),
            i,
        )
        .await?;
        changed.push(format!("{c}/{name}"));
    }
    Ok(changed)
}

/// A blob's properties as a listing shows them (metadata keys in their stored case).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    etag: String,
    size: u64,
    content_type: Option<String>,
    /// Content-Encoding, -Language, Cache-Control, -Disposition, Content-MD5.
    content_headers: [Option<String>; 5],
    metadata: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
}

async fn listing(
    account: &StorageAccount,
    container: &str,
) -> anyhow::Result<BTreeMap<String, Listed>> {
    let options = BlobContainerClientListBlobsOptions {
        include: Some(vec![
            ListBlobsIncludeItem::Metadata,
            ListBlobsIncludeItem::Tags,
        ]),
        ..Default::default()
    };
    let mut out = BTreeMap::new();
    let mut pager = account.container(container)?.list_blobs(Some(options))?;
    while let Some(item) = pager.next().await {
        let item = item?;
        let props = item.properties.unwrap_or_default();
        out.insert(
            item.name.unwrap_or_default(),
            Listed {
                etag: props
                    .etag
                    .map(|e| e.to_string().trim_matches('"').to_string())
                    .unwrap_or_default(),
                size: props.content_length.unwrap_or(0),
                content_headers: [
                    props.content_encoding,
                    props.content_language,
                    props.cache_control,
                    props.content_disposition,
                    props.content_md5.map(hex::encode),
                ],
                content_type: props.content_type,
                metadata: item
                    .metadata
                    .and_then(|m| m.values)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                tags: item
                    .blob_tags
                    .and_then(|t| t.blob_tag_set)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|t| Some((t.key?, t.value?)))
                    .collect(),
            },
        );
    }
    Ok(out)
}

pub async fn sha256_of(
    account: &StorageAccount,
    container: &str,
    name: &str,
) -> anyhow::Result<(String, u64)> {
    let result = account
        .blob(container, name)?
        .download(None)
        .await
        .with_context(|| format!("downloading {container}/{name}"))?;
    let mut body = result.body;
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((hex::encode(hasher.finalize()), len))
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub blobs: u64,
    pub bytes: u64,
    pub problems: Vec<String>,
}

/// Compares every source blob with its backup: content hash, size, content type, metadata
/// (exact key case), user tags, and the record naming the source's ETag.
pub async fn verify(
    source: &StorageAccount,
    backup: &StorageAccount,
    containers: &[(String, String)],
) -> anyhow::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    for (src_c, bak_c) in containers {
        let src = listing(source, src_c).await?;
        let bak = listing(backup, bak_c).await?;
        let checks = futures::stream::iter(src)
            .map(|(name, s)| {
                let b = bak.get(&name).cloned();
                async move {
                    let mut problems = Vec::new();
                    let Some(b) = b else {
                        problems.push(format!("{src_c}/{name}: missing in backup"));
                        return Ok::<_, anyhow::Error>((0u64, problems));
                    };
                    let record = BackupRecord::from_tags(&b.tags);
                    if record.as_ref().map(|r| r.source_etag.as_str()) != Some(s.etag.as_str()) {
                        problems.push(format!(
                            "{src_c}/{name}: backup record {record:?} does not name source ETag {}",
                            s.etag
                        ));
                    }
                    if s.metadata != b.metadata {
                        problems.push(format!(
                            "{src_c}/{name}: metadata differs: {:?} vs {:?}",
                            s.metadata, b.metadata
                        ));
                    }
                    if s.tags != user_tags(&b.tags) {
                        problems.push(format!(
                            "{src_c}/{name}: tags differ: {:?} vs {:?}",
                            s.tags, b.tags
                        ));
                    }
                    if s.content_headers != b.content_headers {
                        problems.push(format!(
                            "{src_c}/{name}: content headers {:?} vs {:?}",
                            s.content_headers, b.content_headers
                        ));
                    }
                    if s.content_type != b.content_type {
                        problems.push(format!(
                            "{src_c}/{name}: content type {:?} vs {:?}",
                            s.content_type, b.content_type
                        ));
                    }
                    let (sh, sl) = sha256_of(source, src_c, &name).await?;
                    let (bh, bl) = sha256_of(backup, bak_c, &name).await?;
                    if sh != bh || sl != bl || sl != s.size {
                        problems.push(format!(
                            "{src_c}/{name}: content differs ({sl} bytes {sh} vs {bl} bytes {bh})"
                        ));
                    }
                    Ok((sl, problems))
                }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<_>>()
            .await?;
        for (bytes, problems) in checks {
            report.blobs += 1;
            report.bytes += bytes;
            report.problems.extend(problems);
        }
    }
    Ok(report)
}

/// Writes a blob with raw HTTP/1.1 so that metadata keys keep their case (the Rust HTTP
/// stack lowercases header names). This stands for "another client" such as the Python
/// SDK or azcopy. Shared Key signed; plain http (the emulator) only.
pub fn raw_put_blob(
    blob_endpoint: &str,
    account: &str,
    key: &str,
    container: &str,
    blob: &str,
    body: &[u8],
    metadata: &[(&str, &str)],
) -> anyhow::Result<()> {
    let url = url::Url::parse(blob_endpoint)?;
    let host = url.host_str().context("endpoint host")?.to_string();
    let port = url.port().context("endpoint port")?;
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let path = format!(
        "{}/{}/{}",
        url.path().trim_end_matches('/'),
        enc(container),
        enc(blob)
    );
    let date = azure_core::time::to_rfc7231(&time::OffsetDateTime::now_utc());
    let mut ms: Vec<(String, String)> = vec![
        ("x-ms-blob-type".into(), "BlockBlob".into()),
        ("x-ms-date".into(), date),
        ("x-ms-version".into(), "2025-01-05".into()),
    ];
    for (k, v) in metadata {
        ms.push((format!("x-ms-meta-{k}"), v.to_string()));
    }
    let mut canon: Vec<(String, String)> = ms
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    canon.sort();
    let canon_headers: String = canon.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let len = if body.is_empty() {
        String::new()
    } else {
        body.len().to_string()
    };
    let to_sign = format!(
        "PUT\n\n\n{len}\n\napplication/octet-stream\n\n\n\n\n\n\n{canon_headers}/{account}{path}"
    );
    let sig = azure_core::hmac::hmac_sha256(
        &to_sign,
        &azure_core::credentials::Secret::new(key.to_string()),
    )?;
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nAuthorization: SharedKey {account}:{sig}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in &ms {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut stream = std::net::TcpStream::connect((host.as_str(), port))?;
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).unwrap_or("");
    if status != "201" {
        bail!(
            "raw put of {container}/{blob} failed: {}",
            response.lines().next().unwrap_or("")
        );
    }
    Ok(())
}

/// A blob (or snapshot) as a listing with metadata and tags shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub snapshot: Option<String>,
    /// Keys in their stored case.
    pub metadata: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

/// Every blob of a container with its metadata and tags, snapshots too if asked.
pub async fn entries(
    account: &StorageAccount,
    container: &str,
    snapshots: bool,
) -> anyhow::Result<Vec<Entry>> {
    let mut include = vec![ListBlobsIncludeItem::Metadata, ListBlobsIncludeItem::Tags];
    if snapshots {
        include.push(ListBlobsIncludeItem::Snapshots);
    }
    let options = BlobContainerClientListBlobsOptions {
        include: Some(include),
        ..Default::default()
    };
    let mut pager = account.container(container)?.list_blobs(Some(options))?;
    let mut out = Vec::new();
    while let Some(item) = pager.next().await {
        let item = item?;
        out.push(Entry {
            name: item.name.unwrap_or_default(),
            snapshot: item.snapshot,
            metadata: item
                .metadata
                .and_then(|m| m.values)
                .unwrap_or_default()
                .into_iter()
                .collect(),
            tags: item
                .blob_tags
                .and_then(|t| t.blob_tag_set)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| Some((t.key?, t.value?)))
                .collect(),
        });
    }
    Ok(out)
}

/// Uploads a blob lakevault cannot copy: its 10 index tags leave no room for the record.
pub async fn put_uncopyable(
    account: &StorageAccount,
    container: &str,
    name: &str,
) -> anyhow::Result<()> {
    let ten_tags = (0..10)
        .map(|i| format!("k{i}=v{i}"))
        .collect::<Vec<_>>()
        .join("&");
    account
        .blob(container, name)?
        .upload(
            RequestContent::from(b"x".to_vec()),
            Some(BlockBlobClientUploadOptions {
                blob_tags_string: Some(ten_tags),
                ..Default::default()
            }),
        )
        .await?;
    Ok(())
}

/// The names of a partitioned data lake of at least `files` files, built around the names
/// that put a hierarchical namespace's listing order apart from a flat one: tables whose
/// names continue past a directory's name with `-`, `.`, space or a letter (`sales/`,
/// `sales-2024/`, `sales.v2/`, `sales 2023/`, `salesforce/`, `sales.csv`), Hive
/// partitions (`year=/month=/day=`), `_SUCCESS` markers, and non-ASCII names. Sorted in
/// the flat order; directories are implied by the names (add empty ones separately).
pub fn partitioned_lake(files: usize) -> Vec<String> {
    const TABLES: [&str; 8] = [
        "sales",
        "sales-2024",
        "sales.v2",
        "sales 2023",
        "salesforce",
        "événements",
        "A",
        "A-B",
    ];
    let mut names = vec![
        "sales.csv".to_string(),
        "A-B-C".to_string(),
        "AB.txt".to_string(),
        "AB/dat4".to_string(),
        "README".to_string(),
    ];
    'fill: for day in 1..=28u32 {
        for month in 1..=12u32 {
            for table in TABLES {
                let dir = format!("{table}/year=2024/month={month:02}/day={day:02}");
                for part in 0..4 {
                    names.push(format!("{dir}/part-{part:05}.snappy.parquet"));
                }
                names.push(format!("{dir}/_SUCCESS"));
                if names.len() >= files {
                    break 'fill;
                }
            }
        }
    }
    names.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
    names
}
