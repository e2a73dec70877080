//! Reading one List Blobs page in one pass
//! (<https://learn.microsoft.com/rest/api/storageservices/list-blobs#response-body>):
//! each `Blob` with the properties a plan uses (name, ETag, size, Last-Modified,
//! Content-MD5, blob type, index tags, and on an account with a hierarchical namespace its
//! resource type, owner, group, permissions and ACL), each `BlobPrefix`, and the
//! `NextMarker`. Everything else (other properties, metadata) is skipped without being
//! decoded. Text is unescaped (`&amp;`, `&#x1F600;`, ...), and a name the service sent
//! percent-encoded (`Encoded="true"`, for characters XML cannot carry) is decoded.

use crate::listing::{LevelEntry, ListedBlob};
use lakevault_common::access::PathAccess;
use lakevault_common::record::{normalise_etag, rfc3339};
use quick_xml::events::{BytesStart, Event};
use std::collections::BTreeMap;

/// One page: its entries in the service's order, and where the next page starts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<LevelEntry>,
    pub next_marker: Option<String>,
}

/// Where in the document an element is, for the elements that matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Root,
    Blobs,
    Blob,
    Prefix,
    Properties,
    Tags,
    TagSet,
    Tag,
    /// A text field: which one, and whether its text was percent-encoded.
    Field(Field, bool),
    /// Something not read (metadata, other properties, the echo of the request).
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    NextMarker,
    BlobName,
    PrefixName,
    Etag,
    ContentLength,
    LastModified,
    ContentMd5,
    BlobType,
    ResourceType,
    Owner,
    Group,
    Permissions,
    Acl,
    TagKey,
    TagValue,
}

/// A blob being read: its fields as they come.
#[derive(Default)]
struct BlobFields {
    name: Option<String>,
    etag: String,
    size: u64,
    last_modified: String,
    content_md5: Option<String>,
    blob_type: Option<String>,
    tags: BTreeMap<String, String>,
    key: Option<String>,
    directory: bool,
    owner: Option<String>,
    group: Option<String>,
    permissions: Option<String>,
    acl: Option<String>,
}

impl BlobFields {
    fn finish(self) -> Option<ListedBlob> {
        let access = self.owner.map(|owner| {
            Box::new(PathAccess {
                directory: self.directory,
                owner,
                group: self.group.unwrap_or_default(),
                permissions: self.permissions.unwrap_or_default(),
                acl: self.acl.unwrap_or_default(),
            })
        });
        Some(ListedBlob {
            name: self.name?,
            etag: self.etag,
            size: self.size,
            last_modified: self.last_modified,
            blob_type: self.blob_type,
            tags: self.tags,
            content_md5: self.content_md5,
            access,
        })
    }
}

/// The child of `parent` that `start` opens.
fn child(parent: At, start: &BytesStart<'_>) -> At {
    let name = start.local_name();
    let name = name.as_ref();
    let field = |f| At::Field(f, encoded(start));
    match (parent, name) {
        (At::Root, b"EnumerationResults") => At::Root,
        (At::Root, b"Blobs") => At::Blobs,
        (At::Root, b"NextMarker") => field(Field::NextMarker),
        (At::Blobs, b"Blob") => At::Blob,
        (At::Blobs, b"BlobPrefix") => At::Prefix,
        (At::Blob, b"Name") => field(Field::BlobName),
        (At::Blob, b"Properties") => At::Properties,
        (At::Blob, b"Tags") => At::Tags,
        (At::Prefix, b"Name") => field(Field::PrefixName),
        (At::Tags, b"TagSet") => At::TagSet,
        (At::TagSet, b"Tag") => At::Tag,
        (At::Tag, b"Key") => field(Field::TagKey),
        (At::Tag, b"Value") => field(Field::TagValue),
        (At::Properties, b"Etag") => field(Field::Etag),
        (At::Properties, b"Content-Length") => field(Field::ContentLength),
        (At::Properties, b"Last-Modified") => field(Field::LastModified),
        (At::Properties, b"Content-MD5") => field(Field::ContentMd5),
        (At::Properties, b"BlobType") => field(Field::BlobType),
        (At::Properties, b"ResourceType") => field(Field::ResourceType),
        (At::Properties, b"Owner") => field(Field::Owner),
        (At::Properties, b"Group") => field(Field::Group),
        (At::Properties, b"Permissions") => field(Field::Permissions),
        (At::Properties, b"Acl") => field(Field::Acl),
        _ => At::Skipped,
    }
}

fn encoded(start: &BytesStart<'_>) -> bool {
    start
        .try_get_attribute("Encoded")
        .ok()
        .flatten()
        .is_some_and(|a| a.value.as_ref() == b"true")
}

/// Reads one page.
pub fn parse(body: &[u8]) -> Result<Page, String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut page = Page::default();
    let mut stack: Vec<At> = Vec::with_capacity(8);
    let mut blob = BlobFields::default();
    let mut prefix: Option<String> = None;
    let mut text = String::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(start) => {
                let parent = stack.last().copied().unwrap_or(At::Root);
                let at = if parent == At::Skipped {
                    At::Skipped
                } else {
                    child(parent, &start)
                };
                if at == At::Blob {
                    blob = BlobFields::default();
                }
                text.clear();
                stack.push(at);
            }
            Event::Empty(start) => {
                // `<NextMarker />`, `<Content-MD5 />`: an element without text.
                let parent = stack.last().copied().unwrap_or(At::Root);
                if parent != At::Skipped
                    && let At::Field(field, _) = child(parent, &start)
                {
                    take(field, String::new(), &mut blob, &mut prefix, &mut page)?;
                }
            }
            Event::Text(t) => {
                if matches!(stack.last(), Some(At::Field(..))) {
                    text.push_str(&t.decode().map_err(|e| e.to_string())?);
                }
            }
            Event::GeneralRef(r) => {
                if matches!(stack.last(), Some(At::Field(..))) {
                    match r.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => text.push(c),
                        None => text.push(match &*r {
                            b"amp" => '&',
                            b"lt" => '<',
                            b"gt" => '>',
                            b"quot" => '"',
                            b"apos" => '\'',
                            other => {
                                return Err(format!(
                                    "unknown entity &{};",
                                    String::from_utf8_lossy(other)
                                ));
                            }
                        }),
                    }
                }
            }
            Event::CData(c) => {
                if matches!(stack.last(), Some(At::Field(..))) {
                    text.push_str(&c.decode().map_err(|e| e.to_string())?);
                }
            }
            Event::End(_) => match stack.pop() {
                Some(At::Field(field, encoded)) => {
                    let value = if encoded {
                        percent_encoding::percent_decode_str(&text)
                            .decode_utf8()
                            .map_err(|e| format!("an encoded name is not UTF-8: {e}"))?
                            .into_owned()
                    } else {
                        std::mem::take(&mut text)
                    };
                    text.clear();
                    take(field, value, &mut blob, &mut prefix, &mut page)?;
                }
                Some(At::Blob) => {
                    if let Some(b) = std::mem::take(&mut blob).finish() {
                        page.entries.push(LevelEntry::Blob(b));
                    }
                }
                Some(At::Prefix) => {
                    if let Some(p) = prefix.take() {
                        page.entries.push(LevelEntry::Prefix(p));
                    }
                }
                Some(_) => {}
                None => return Err("an end tag without its start".into()),
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(page)
}

/// Stores one field's text where it belongs.
fn take(
    field: Field,
    value: String,
    blob: &mut BlobFields,
    prefix: &mut Option<String>,
    page: &mut Page,
) -> Result<(), String> {
    match field {
        Field::NextMarker => page.next_marker = (!value.is_empty()).then_some(value),
        Field::BlobName => blob.name = Some(value),
        Field::PrefixName => *prefix = Some(value),
        Field::Etag => blob.etag = normalise_etag(&value),
        Field::ContentLength => {
            blob.size = if value.is_empty() {
                0
            } else {
                value
                    .parse()
                    .map_err(|_| format!("Content-Length `{value}` is not a number"))?
            }
        }
        Field::LastModified => blob.last_modified = http_date_to_rfc3339(&value),
        Field::ContentMd5 => blob.content_md5 = (!value.is_empty()).then_some(value),
        Field::BlobType => blob.blob_type = (!value.is_empty()).then_some(value),
        Field::ResourceType => blob.directory = value == "directory",
        Field::Owner => blob.owner = Some(value),
        Field::Group => blob.group = Some(value),
        Field::Permissions => blob.permissions = Some(value),
        Field::Acl => blob.acl = Some(value),
        Field::TagKey => blob.key = Some(value),
        Field::TagValue => {
            if let Some(key) = blob.key.take() {
                blob.tags.insert(key, value);
            }
        }
    }
    Ok(())
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// A listing's `Last-Modified` (RFC 1123, `Mon, 01 Jan 2024 10:20:30 GMT`) as RFC 3339
/// (`2024-01-01T10:20:30Z`), the form records and work items carry. The fixed shape the
/// service writes is rearranged without a calendar; anything else goes through the
/// general parser, and what that cannot read either is kept empty (an unknown time).
pub fn http_date_to_rfc3339(text: &str) -> String {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() == 29
        && &b[3..5] == b", "
        && digits(5..7)
        && digits(12..16)
        && digits(17..19)
        && b[19] == b':'
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && &b[25..] == b" GMT"
        && let Some(m) = MONTHS.iter().position(|m| &b[8..11] == *m)
    {
        let day: u8 = (b[5] - b'0') * 10 + (b[6] - b'0');
        let year: u16 = text[12..16].parse().unwrap_or(0);
        let leap =
            year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
        let days_in_month = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        if day >= 1
            && day <= days_in_month[m]
            && &text[17..19] < "24"
            && &text[20..22] < "60"
            && &text[23..25] < "60"
        {
            return format!(
                "{}-{:02}-{}T{}Z",
                &text[12..16],
                m + 1,
                &text[5..7],
                &text[17..25]
            );
        }
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822)
        .map(rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blob(entries: &[LevelEntry], i: usize) -> &ListedBlob {
        match &entries[i] {
            LevelEntry::Blob(b) => b,
            other => panic!("entry {i} is not a blob: {other:?}"),
        }
    }

    /// A page as Azure writes it (the example of the REST reference, with tags).
    const AZURE_PAGE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://acct.blob.core.windows.net/" ContainerName="lake">
  <Prefix>a</Prefix>
  <Marker />
  <MaxResults>3</MaxResults>
  <Delimiter>/</Delimiter>
  <Blobs>
    <Blob>
      <Name>a &amp; b &lt;c&gt; &#x1F600; d&#233;j&#224;</Name>
      <Properties>
        <Creation-Time>Mon, 01 Jan 2024 00:00:00 GMT</Creation-Time>
        <Last-Modified>Tue, 02 Jan 2024 03:04:05 GMT</Last-Modified>
        <Etag>0x8DC1234567890AB</Etag>
        <Content-Length>1234</Content-Length>
        <Content-Type>text/plain</Content-Type>
        <Content-MD5>1B2M2Y8AsgTpgAmY7PhCfg==</Content-MD5>
        <BlobType>BlockBlob</BlobType>
        <LeaseStatus>unlocked</LeaseStatus>
      </Properties>
      <Metadata><Etag>not the etag</Etag><Name>not the name</Name></Metadata>
      <Tags><TagSet>
        <Tag><Key>lakevault</Key><Value>v1 etag=0x1 mtime=2024-01-01T00:00:00Z at=2024-01-01T00:00:00Z job=j</Value></Tag>
        <Tag><Key>team</Key><Value>a b</Value></Tag>
      </TagSet></Tags>
    </Blob>
    <BlobPrefix><Name>a/</Name></BlobPrefix>
    <Blob>
      <Name Encoded="true">a%EF%BF%BEb</Name>
      <Properties>
        <Last-Modified>Wed, 03 Jan 2024 00:00:00 GMT</Last-Modified>
        <Etag>"0x8DC0000000000AB"</Etag>
        <Content-Length>0</Content-Length>
        <Content-MD5 />
        <BlobType>AppendBlob</BlobType>
        <ResourceType>directory</ResourceType>
        <Owner>$superuser</Owner>
        <Group>$superuser</Group>
        <Permissions>rwxr-x---+</Permissions>
        <Acl>user::rwx,user:1234:r-x,group::r-x,mask::r-x,other::---</Acl>
      </Properties>
    </Blob>
  </Blobs>
  <NextMarker>2!76!MDAwMDE0</NextMarker>
</EnumerationResults>"#;

    #[test]
    fn reads_what_a_plan_uses_and_skips_the_rest() {
        let page = parse(AZURE_PAGE.as_bytes()).unwrap();
        assert_eq!(page.next_marker.as_deref(), Some("2!76!MDAwMDE0"));
        assert_eq!(page.entries.len(), 3);
        let a = blob(&page.entries, 0);
        assert_eq!(a.name, "a & b <c> \u{1F600} d\u{e9}j\u{e0}");
        assert_eq!(a.etag, "0x8DC1234567890AB");
        assert_eq!(a.size, 1234);
        assert_eq!(a.last_modified, "2024-01-02T03:04:05Z");
        assert_eq!(a.content_md5.as_deref(), Some("1B2M2Y8AsgTpgAmY7PhCfg=="));
        assert_eq!(a.blob_type.as_deref(), Some("BlockBlob"));
        assert_eq!(a.tags.len(), 2);
        assert_eq!(a.tags["team"], "a b");
        assert!(a.access.is_none());
        assert_eq!(page.entries[1], LevelEntry::Prefix("a/".into()));
        let b = blob(&page.entries, 2);
        assert_eq!(b.name, "a\u{FFFE}b");
        assert_eq!(b.etag, "0x8DC0000000000AB");
        assert_eq!(b.content_md5, None);
        let access = b.access.as_deref().unwrap();
        assert!(access.directory);
        assert_eq!(access.owner, "$superuser");
        assert_eq!(access.permissions, "rwxr-x---+");
        assert_eq!(
            access.acl,
            "user::rwx,user:1234:r-x,group::r-x,mask::r-x,other::---"
        );
    }

    #[test]
    fn the_last_page_has_no_marker() {
        for tail in ["<NextMarker />", "<NextMarker></NextMarker>", ""] {
            let xml = format!(
                "<EnumerationResults><Blobs><Blob><Name>x</Name><Properties><Etag>e</Etag></Properties></Blob></Blobs>{tail}</EnumerationResults>"
            );
            let page = parse(xml.as_bytes()).unwrap();
            assert_eq!(page.next_marker, None, "{tail}");
            assert_eq!(page.entries.len(), 1);
        }
    }

    #[test]
    fn a_broken_page_is_an_error_not_a_shorter_listing() {
        for xml in [
            "<EnumerationResults><Blobs><Blob><Name>x</Name></Blobs>",
            "<EnumerationResults><Blobs><Blob><Name>&bogus;</Name></Blob></Blobs></EnumerationResults>",
            "<EnumerationResults><Blobs><Blob><Name>x</Name><Properties><Content-Length>ten</Content-Length></Properties></Blob></Blobs></EnumerationResults>",
        ] {
            assert!(parse(xml.as_bytes()).is_err(), "{xml}");
        }
    }

    #[test]
    fn service_dates_become_rfc3339() {
        assert_eq!(
            http_date_to_rfc3339("Thu, 29 Feb 2024 23:59:59 GMT"),
            "2024-02-29T23:59:59Z"
        );
        assert_eq!(http_date_to_rfc3339("not a date"), "");
    }

    proptest! {
        /// The fast path says what the general parser says, for every time it can write.
        #[test]
        fn the_fast_date_path_agrees_with_the_general_parser(secs in 0i64..4_102_444_800) {
            let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let http = t
                .format(&time::format_description::well_known::Rfc2822)
                .unwrap()
                .replace(" +0000", " GMT");
            prop_assert_eq!(http_date_to_rfc3339(&http), rfc3339(t));
        }

        /// Any name and tag text survives escaping and reading.
        #[test]
        fn any_text_is_read_back(name in "\\PC{1,40}", value in "[ -~]{0,30}") {
            let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            let xml = format!(
                "<EnumerationResults><Blobs><Blob><Name>{}</Name><Properties><Etag>e</Etag></Properties><Tags><TagSet><Tag><Key>k</Key><Value>{}</Value></Tag></TagSet></Tags></Blob></Blobs></EnumerationResults>",
                esc(&name),
                esc(&value)
            );
            let page = parse(xml.as_bytes()).unwrap();
            let b = blob(&page.entries, 0);
            prop_assert_eq!(&b.name, &name);
            prop_assert_eq!(&b.tags["k"], &value);
        }
    }
}
