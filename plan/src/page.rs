//! Reading one List Blobs page in one pass
//! (<https://learn.microsoft.com/rest/api/storageservices/list-blobs#response-body>):
//! each `Blob` with the properties a plan uses (name, ETag, size, Last-Modified,
//! Content-MD5, blob type, index tags, and on an account with a hierarchical namespace its
//! resource type, owner, group, permissions and ACL), each `BlobPrefix`, and the
//! `NextMarker`. Everything else (other properties, metadata) is skipped without being
//! decoded. Text is unescaped (`&amp;`, `&#x1F600;`, ...), and a name the service sent
//! percent-encoded (`Encoded="true"`, for characters XML cannot carry) is decoded.
//!
//! A page is kept compactly until its entries are taken: every text of the page in one
//! buffer, each entry as offsets into it (about 200 to 300 bytes an entry, against about
//! 1 KB as separate strings and a tag map). Pages wait in memory while shards are listed
//! side by side, so what a page weighs is what bounds how many listings can be in flight.

use crate::listing::{LevelEntry, ListedBlob};
use lakevault_common::access::PathAccess;
use lakevault_common::record::rfc3339;
use quick_xml::events::{BytesStart, Event};
use std::collections::BTreeMap;
use std::ops::Range;

/// One page: its entries in the service's order, and where the next page starts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Every text of the page's entries, one after another.
    text: String,
    entries: Vec<Packed>,
    pub next_marker: Option<String>,
}

/// Offsets of one entry's texts in [`Page::text`] (`u32`: a page is far below 4 GiB).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Packed {
    prefix: bool,
    name: Span,
    etag: Span,
    last_modified: Span,
    content_md5: Span,
    blob_type: Span,
    /// `key\0value\0` for each tag (tag keys and values cannot hold NUL).
    tags: Span,
    size: u64,
    access: Option<Box<PathAccess>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Span(u32, u32);

impl Span {
    fn range(self) -> Range<usize> {
        self.0 as usize..self.1 as usize
    }

    fn is_empty(self) -> bool {
        self.0 == self.1
    }
}

impl Page {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, each made whole as it is taken.
    pub fn into_entries(self) -> impl Iterator<Item = LevelEntry> + Send {
        let Page { text, entries, .. } = self;
        entries.into_iter().map(move |p| unpack(&text, p))
    }

    /// The entries made whole at once (for tests and small pages).
    pub fn entries(self) -> Vec<LevelEntry> {
        self.into_entries().collect()
    }
}

fn unpack(text: &str, p: Packed) -> LevelEntry {
    let s = |span: Span| text[span.range()].to_string();
    let opt = |span: Span| (!span.is_empty()).then(|| s(span));
    if p.prefix {
        return LevelEntry::Prefix(s(p.name));
    }
    let mut tags = BTreeMap::new();
    let mut parts = text[p.tags.range()].split('\0');
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        tags.insert(k.to_string(), v.to_string());
    }
    LevelEntry::Blob(ListedBlob {
        name: s(p.name),
        etag: s(p.etag),
        size: p.size,
        last_modified: s(p.last_modified),
        blob_type: opt(p.blob_type),
        tags,
        content_md5: opt(p.content_md5),
        access: p.access,
    })
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
    /// A text field: which one, whether its text was percent-encoded, and where its text
    /// starts in the page's buffer.
    Field(Field, bool, usize),
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

/// Access control fields of the entry being read (HNS listings only).
#[derive(Default)]
struct AccessFields {
    directory: bool,
    owner: Option<String>,
    group: Option<String>,
    permissions: Option<String>,
    acl: Option<String>,
}

impl AccessFields {
    fn finish(self) -> Option<Box<PathAccess>> {
        let owner = self.owner?;
        Some(Box::new(PathAccess {
            directory: self.directory,
            owner,
            group: self.group.unwrap_or_default(),
            permissions: self.permissions.unwrap_or_default(),
            acl: self.acl.unwrap_or_default(),
        }))
    }
}

/// The child of `parent` that `start` opens; a field's text will start at `at`.
fn child(parent: At, start: &BytesStart<'_>, at: usize) -> At {
    let name = start.local_name();
    let name = name.as_ref();
    let field = |f| At::Field(f, f == Field::BlobName && encoded(start), at);
    match (parent, name) {
        (At::Root, b"EnumerationResults") => At::Root,
        (At::Root, b"Blobs") => At::Blobs,
        (At::Root, b"NextMarker") => field(Field::NextMarker),
        (At::Blobs, b"Blob") => At::Blob,
        (At::Blobs, b"BlobPrefix") => At::Prefix,
        (At::Blob, b"Name") => field(Field::BlobName),
        (At::Blob, b"Properties") => At::Properties,
        (At::Blob, b"Tags") => At::Tags,
        (At::Prefix, b"Name") => At::Field(Field::PrefixName, encoded(start), at),
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

fn span(start: usize, end: usize) -> Result<Span, String> {
    let n = |v: usize| u32::try_from(v).map_err(|_| "a page of over 4 GiB".to_string());
    Ok(Span(n(start)?, n(end)?))
}

/// Reads one page.
pub fn parse(body: &[u8]) -> Result<Page, String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut page = Page {
        // Kept texts are a fraction of the XML around them.
        text: String::with_capacity(body.len() / 3),
        ..Default::default()
    };
    let mut stack: Vec<At> = Vec::with_capacity(8);
    let mut entry = Packed::default();
    let mut access = AccessFields::default();
    let mut tags_start = 0;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        let in_field = matches!(stack.last(), Some(At::Field(..)));
        match event {
            Event::Start(start) => {
                let parent = stack.last().copied().unwrap_or(At::Root);
                let at = if parent == At::Skipped {
                    At::Skipped
                } else {
                    child(parent, &start, page.text.len())
                };
                match at {
                    At::Blob | At::Prefix => {
                        entry = Packed {
                            prefix: at == At::Prefix,
                            ..Default::default()
                        };
                        access = AccessFields::default();
                    }
                    At::Tags => tags_start = page.text.len(),
                    _ => {}
                }
                stack.push(at);
            }
            Event::Empty(start) => {
                // `<NextMarker />`, `<Content-MD5 />`: an element without text.
                let parent = stack.last().copied().unwrap_or(At::Root);
                if parent != At::Skipped
                    && let At::Field(field, _, at) = child(parent, &start, page.text.len())
                {
                    end_field(field, false, at, &mut page, &mut entry, &mut access)?;
                }
            }
            Event::Text(t) if in_field => {
                page.text.push_str(&t.decode().map_err(|e| e.to_string())?);
            }
            Event::CData(c) if in_field => {
                page.text.push_str(&c.decode().map_err(|e| e.to_string())?);
            }
            Event::GeneralRef(r) if in_field => {
                let c = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c,
                    None => match &*r {
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
                    },
                };
                page.text.push(c);
            }
            Event::End(_) => match stack.pop() {
                Some(At::Field(field, encoded, at)) => {
                    end_field(field, encoded, at, &mut page, &mut entry, &mut access)?;
                }
                Some(At::Tags) => entry.tags = span(tags_start, page.text.len())?,
                Some(At::Blob) => {
                    if !entry.name.is_empty() {
                        entry.access = std::mem::take(&mut access).finish();
                        page.entries.push(std::mem::take(&mut entry));
                    }
                }
                Some(At::Prefix) => {
                    if !entry.name.is_empty() {
                        page.entries.push(std::mem::take(&mut entry));
                    }
                }
                Some(_) => {}
                None => return Err("an end tag without its start".into()),
            },
            Event::Eof => break,
            _ => {}
        }
    }
    page.text.shrink_to_fit();
    Ok(page)
}

/// Files the text a field left at `at..` in the page's buffer where it belongs: kept there
/// as a span, rewritten in place (a decoded name, an ETag without quotes, a time in RFC
/// 3339), or taken out (numbers, access control, the marker).
fn end_field(
    field: Field,
    encoded: bool,
    at: usize,
    page: &mut Page,
    entry: &mut Packed,
    access: &mut AccessFields,
) -> Result<(), String> {
    let text = &mut page.text;
    let take_out = |text: &mut String| -> String { text.split_off(at) };
    match field {
        Field::BlobName | Field::PrefixName => {
            if encoded {
                let raw = take_out(text);
                let decoded = percent_encoding::percent_decode_str(&raw)
                    .decode_utf8()
                    .map_err(|e| format!("an encoded name is not UTF-8: {e}"))?;
                text.push_str(&decoded);
            }
            entry.name = span(at, text.len())?;
        }
        Field::Etag => {
            // Listings write ETags bare, headers quoted: kept bare, as records hold them.
            let raw = take_out(text);
            text.push_str(raw.trim().trim_matches('"'));
            entry.etag = span(at, text.len())?;
        }
        Field::LastModified => {
            let raw = take_out(text);
            http_date_to_rfc3339_into(&raw, text);
            entry.last_modified = span(at, text.len())?;
        }
        Field::ContentMd5 => entry.content_md5 = span(at, text.len())?,
        Field::BlobType => entry.blob_type = span(at, text.len())?,
        Field::ContentLength => {
            let raw = take_out(text);
            entry.size = if raw.is_empty() {
                0
            } else {
                raw.parse()
                    .map_err(|_| format!("Content-Length `{raw}` is not a number"))?
            };
        }
        Field::TagKey | Field::TagValue => text.push('\0'),
        Field::NextMarker => {
            let raw = take_out(text);
            page.next_marker = (!raw.is_empty()).then_some(raw);
        }
        Field::ResourceType => access.directory = take_out(text) == "directory",
        Field::Owner => access.owner = Some(take_out(text)),
        Field::Group => access.group = Some(take_out(text)),
        Field::Permissions => access.permissions = Some(take_out(text)),
        Field::Acl => access.acl = Some(take_out(text)),
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
    let mut out = String::new();
    http_date_to_rfc3339_into(text, &mut out);
    out
}

/// [`http_date_to_rfc3339`], appended to `out`.
fn http_date_to_rfc3339_into(text: &str, out: &mut String) {
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
            out.push_str(&text[12..16]);
            out.push('-');
            out.push(char::from(b'0' + (m + 1) as u8 / 10));
            out.push(char::from(b'0' + (m + 1) as u8 % 10));
            out.push('-');
            out.push_str(&text[5..7]);
            out.push('T');
            out.push_str(&text[17..25]);
            out.push('Z');
            return;
        }
    }
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822)
    {
        out.push_str(&rfc3339(t));
    }
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
        let entries = page.entries();
        assert_eq!(entries.len(), 3);
        let a = blob(&entries, 0);
        assert_eq!(a.name, "a & b <c> \u{1F600} d\u{e9}j\u{e0}");
        assert_eq!(a.etag, "0x8DC1234567890AB");
        assert_eq!(a.size, 1234);
        assert_eq!(a.last_modified, "2024-01-02T03:04:05Z");
        assert_eq!(a.content_md5.as_deref(), Some("1B2M2Y8AsgTpgAmY7PhCfg=="));
        assert_eq!(a.blob_type.as_deref(), Some("BlockBlob"));
        assert_eq!(a.tags.len(), 2);
        assert_eq!(a.tags["team"], "a b");
        assert!(a.access.is_none());
        assert_eq!(entries[1], LevelEntry::Prefix("a/".into()));
        let b = blob(&entries, 2);
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
            assert_eq!(page.len(), 1);
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
            let entries = parse(xml.as_bytes()).unwrap().entries();
            let b = blob(&entries, 0);
            prop_assert_eq!(&b.name, &name);
            prop_assert_eq!(&b.tags["k"], &value);
        }
    }
}
