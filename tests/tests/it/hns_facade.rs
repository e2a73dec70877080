//! The HNS façade's access control, against the real emulator: owner, group, permissions
//! and ACL in List Blobs with `include=permissions`, the dfs endpoint's setAccessControl,
//! getAccessControl and directory create, default ACLs inherited by new paths, and a
//! façade whose caller may not change owners. Requests to the dfs endpoint go unsigned:
//! the façade checks no authorization there.

use lakevault_common::config::Config;
use lakevault_common::storage::StorageAccount;
use lakevault_tests::Lab;
use lakevault_tests::azurite::SOURCE_ACCOUNT;
use lakevault_tests::hns_facade::{Access, HnsFacade};
use lakevault_tests::lake;
use reqwest::{Method, StatusCode};

const FILE_ACL: &str = "user::rw-,group::r--,other::---";
const DIR_ACL: &str = "user::rwx,group::r-x,other::---";

fn access(owner: &str, group: &str, permissions: &str, acl: &str) -> Access {
    Access {
        owner: owner.into(),
        group: group.into(),
        permissions: permissions.into(),
        acl: acl.into(),
    }
}

fn default_file() -> Access {
    access("$superuser", "$superuser", "rw-r-----", FILE_ACL)
}

fn default_dir() -> Access {
    access("$superuser", "$superuser", "rwxr-x---", DIR_ACL)
}

/// A lab with container `data` in the source account, a façade in front of that account,
/// and the account seen through the façade (what writes through the blob endpoint use).
struct World {
    lab: Lab,
    facade: HnsFacade,
    through: StorageAccount,
    http: reqwest::Client,
}

impl World {
    async fn start(queue: &str, refusing_owner_changes: bool) -> World {
        let lab = Lab::start(queue, &["data"]).expect("lab");
        lab.src.ensure_container("data").await.expect("container");
        let upstream = lab.upstream(SOURCE_ACCOUNT);
        let facade = if refusing_owner_changes {
            HnsFacade::start_refusing_owner_changes(&upstream, lab.src.clone()).await
        } else {
            HnsFacade::start(&upstream, lab.src.clone()).await
        }
        .expect("facade");
        let text = lab.config_through(SOURCE_ACCOUNT, &facade.url());
        let config = Config::parse(&text).expect("config");
        let (through, _) = lakevault_tests::accounts(&config).expect("accounts");
        World {
            lab,
            facade,
            through,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str, query: &str) -> String {
        format!("{}/{SOURCE_ACCOUNT}/data/{path}?{query}", self.facade.url())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path, query));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().expect("ascii").to_string())
        };
        let headers = [
            "x-ms-error-code",
            "x-ms-owner",
            "x-ms-group",
            "x-ms-permissions",
            "x-ms-acl",
            "x-ms-resource-type",
            "etag",
            "last-modified",
        ]
        .map(|name| (name, header(name)));
        let body = response.text().await.expect("body");
        Answer {
            status,
            headers: headers.into_iter().collect(),
            body,
        }
    }

    async fn set_access(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::PATCH, path, "action=setAccessControl", headers)
            .await
    }

    async fn get_access(&self, path: &str) -> Answer {
        self.send(Method::HEAD, path, "action=getAccessControl", &[])
            .await
    }

    async fn create_directory(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::PUT, path, "resource=directory", headers)
            .await
    }

    /// Writes a blob through the façade (Put Blob on its blob endpoint).
    async fn put_through(&self, name: &str, body: &[u8]) {
        lake::put(&self.through, "data", name, body)
            .await
            .expect("put through the façade");
    }

    /// Every entry of a List Blobs answered by the façade with `query`, all pages.
    async fn list(&self, query: &str) -> Listing {
        let url = format!(
            "{}/{SOURCE_ACCOUNT}/data?restype=container&comp=list&{query}",
            self.facade.url()
        );
        let response = self.http.get(url).send().await.expect("list");
        assert_eq!(response.status(), StatusCode::OK);
        let xml = response.text().await.expect("body");
        assert!(xml.contains("<NextMarker></NextMarker>"), "one page: {xml}");
        parse_listing(&xml)
    }
}

/// What a dfs request was answered.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: std::collections::BTreeMap<&'static str, Option<String>>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.as_deref())
    }

    /// The access control of a getAccessControl answer.
    fn access(&self) -> Access {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        let get = |name| self.header(name).expect(name).to_string();
        access(
            &get("x-ms-owner"),
            &get("x-ms-group"),
            &get("x-ms-permissions"),
            &get("x-ms-acl"),
        )
    }

    /// Asserts an error answer: status, `x-ms-error-code` and, if `json`, the same code in
    /// the JSON body.
    fn assert_error(&self, status: StatusCode, code: &str, json: bool) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("x-ms-error-code"), Some(code), "{self:?}");
        if json {
            let body: serde_json::Value = serde_json::from_str(&self.body).expect("JSON body");
            assert_eq!(body["error"]["code"], code, "{self:?}");
            assert!(body["error"]["message"].is_string(), "{self:?}");
        } else {
            assert!(self.body.is_empty(), "{self:?}");
        }
    }
}

/// One `<Blob>` of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    name: String,
    resource_type: String,
    access: Option<Access>,
}

#[derive(Debug)]
struct Listing {
    blobs: Vec<Listed>,
    prefixes: Vec<String>,
}

impl Listing {
    fn get(&self, name: &str) -> &Listed {
        self.blobs
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("{name} is not listed: {self:?}"))
    }

    fn names(&self) -> Vec<&str> {
        self.blobs.iter().map(|b| b.name.as_str()).collect()
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(unescape(&xml[start..end]))
}

fn parse_listing(xml: &str) -> Listing {
    let blobs = xml
        .split("<Blob>")
        .skip(1)
        .map(|chunk| {
            let blob = &chunk[..chunk.find("</Blob>").expect("closed")];
            let owner = tag(blob, "Owner");
            Listed {
                name: tag(blob, "Name").expect("name"),
                resource_type: tag(blob, "ResourceType").expect("resource type"),
                access: owner.map(|owner| Access {
                    owner,
                    group: tag(blob, "Group").expect("group"),
                    permissions: tag(blob, "Permissions").expect("permissions"),
                    acl: tag(blob, "Acl").expect("acl"),
                }),
            }
        })
        .collect();
    let prefixes = xml
        .split("<BlobPrefix>")
        .skip(1)
        .map(|chunk| tag(chunk, "Name").expect("prefix name"))
        .collect();
    Listing { blobs, prefixes }
}

/// `include=permissions` (here with metadata, percent-encoded comma) brings the owner,
/// group, permissions and ACL of every file and directory, flat and with `delimiter=/`;
/// without it, none. Paths nobody set get Azure's defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_permissions_lists_owner_group_permissions_and_acl() {
    let w = World::start("hns-list-acl", false).await;
    for name in ["top.csv", "dir/inner.csv"] {
        lake::put(&w.lab.src, "data", name, b"x")
            .await
            .expect("put");
    }
    lake::put_directory(&w.lab.src, "data", "empty")
        .await
        .expect("directory");

    let flat = w.list("include=metadata%2Cpermissions").await;
    let expected = [
        ("dir", "directory", default_dir()),
        ("dir/inner.csv", "file", default_file()),
        ("empty", "directory", default_dir()),
        ("top.csv", "file", default_file()),
    ]
    .map(|(name, kind, access)| Listed {
        name: name.into(),
        resource_type: kind.into(),
        access: Some(access),
    });
    assert_eq!(flat.blobs, expected);

    let plain = w.list("include=metadata").await;
    assert_eq!(plain.names(), ["dir", "dir/inner.csv", "empty", "top.csv"]);
    assert!(
        plain.blobs.iter().all(|b| b.access.is_none()),
        "no permissions unless asked: {plain:?}"
    );

    let hierarchical = w.list("delimiter=%2F&include=permissions").await;
    assert_eq!(hierarchical.names(), ["dir", "empty", "top.csv"]);
    assert_eq!(hierarchical.prefixes, ["dir/", "empty/"]);
    assert_eq!(hierarchical.get("dir").access, Some(default_dir()));
    assert_eq!(hierarchical.get("top.csv").access, Some(default_file()));

    let nested = w
        .list("delimiter=%2F&prefix=dir%2F&include=permissions")
        .await;
    assert_eq!(nested.names(), ["dir/inner.csv"]);
    assert_eq!(nested.get("dir/inner.csv").access, Some(default_file()));

    // What the façade holds is what it lists; the root directory too.
    assert_eq!(
        w.facade.access("data", "dir/inner.csv"),
        Some(default_file())
    );
    assert_eq!(w.facade.access("data", "empty"), Some(default_dir()));
    assert_eq!(w.facade.access("data", ""), Some(default_dir()));
    // Seeded state is listed as it is.
    let seeded = access(
        "oid-1",
        "oid-2",
        "r--------",
        "user::r--,group::---,other::---",
    );
    w.facade.set_access("data", "top.csv", seeded.clone());
    let again = w.list("include=permissions").await;
    assert_eq!(again.get("top.csv").access, Some(seeded));
    assert_eq!(w.facade.access_requests(), 0, "no dfs request was made");
}

/// setAccessControl replaces what it is given, getAccessControl answers it back, and the
/// listing shows it; the permissions come from the ACL (`+` for named entries and a mask);
/// `x-ms-permissions` with `x-ms-acl` is refused, so is a path that does not exist, and a
/// dfs request the façade does not emulate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_access_control_then_get_access_control_round_trips() {
    let w = World::start("hns-set-get", false).await;
    lake::put(&w.lab.src, "data", "reports/q1.csv", b"x")
        .await
        .expect("put");

    let before = w.get_access("reports/q1.csv").await;
    assert_eq!(before.access(), default_file());
    assert_eq!(before.header("x-ms-resource-type"), Some("file"));
    assert!(before.header("etag").is_some_and(|e| e.starts_with('"')));
    assert!(before.header("last-modified").is_some());
    let dir = w.get_access("reports").await;
    assert_eq!(dir.access(), default_dir());
    assert_eq!(dir.header("x-ms-resource-type"), Some("directory"));

    let acl = "user::rw-,user:bob:r--,group::r--,mask::r-x,other::---";
    let set = w
        .set_access(
            "reports/q1.csv",
            &[
                ("x-ms-owner", "alice"),
                ("x-ms-group", "finance"),
                ("x-ms-acl", acl),
            ],
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    assert!(set.header("etag").is_some() && set.header("last-modified").is_some());
    let expected = access("alice", "finance", "rw-r-x---+", acl);
    assert_eq!(w.get_access("reports/q1.csv").await.access(), expected);
    assert_eq!(
        w.facade.access("data", "reports/q1.csv"),
        Some(expected.clone())
    );
    let listed = w.list("include=permissions").await;
    assert_eq!(listed.get("reports/q1.csv").access, Some(expected));

    // x-ms-permissions alone: the owner, mask and other entries change, the rest stays.
    let chmod = w
        .set_access("reports/q1.csv", &[("x-ms-permissions", "0640")])
        .await;
    assert_eq!(chmod.status, StatusCode::OK, "{chmod:?}");
    let after_chmod = access(
        "alice",
        "finance",
        "rw-r-----+",
        "user::rw-,user:bob:r--,group::r--,mask::r--,other::---",
    );
    assert_eq!(w.get_access("reports/q1.csv").await.access(), after_chmod);
    let symbolic = w
        .set_access("reports", &[("x-ms-permissions", "rwxrwx---")])
        .await;
    assert_eq!(symbolic.status, StatusCode::OK, "{symbolic:?}");
    assert_eq!(
        w.get_access("reports").await.access(),
        access(
            "$superuser",
            "$superuser",
            "rwxrwx---",
            "user::rwx,group::rwx,other::---"
        )
    );

    // Refused, and nothing changes.
    w.set_access(
        "reports/q1.csv",
        &[("x-ms-permissions", "0777"), ("x-ms-acl", FILE_ACL)],
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "InvalidHeaderValue", true);
    w.set_access("reports/q1.csv", &[("x-ms-acl", "user:rw-")])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "InvalidHeaderValue", true);
    assert_eq!(w.get_access("reports/q1.csv").await.access(), after_chmod);
    w.set_access("reports/q2.csv", &[("x-ms-owner", "alice")])
        .await
        .assert_error(StatusCode::NOT_FOUND, "PathNotFound", true);
    w.get_access("reports/q2.csv")
        .await
        .assert_error(StatusCode::NOT_FOUND, "PathNotFound", false);
    assert_eq!(w.facade.access("data", "reports/q2.csv"), None);

    // Not emulated: refused as an unsupported query parameter, not passed to the emulator.
    w.send(
        Method::PATCH,
        "reports",
        "action=setAccessControlRecursive&mode=set",
        &[("x-ms-acl", DIR_ACL)],
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "UnsupportedQueryParameter", true);
    w.send(Method::GET, "", "resource=filesystem&recursive=true", &[])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "UnsupportedQueryParameter", true);
    // Seven getAccessControl and six setAccessControl (three refused), whatever the
    // answer; the unsupported ones are not counted.
    assert_eq!(w.facade.access_requests(), 13);
}

/// Path - Create with `resource=directory` creates an empty directory (and its parent)
/// that the listing shows; `If-None-Match: *` on it then fails, a file in the way is
/// refused; the access-control headers of the request are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_directory_makes_an_empty_directory_and_refuses_an_existing_one() {
    let w = World::start("hns-mkdir", false).await;
    let made = w.create_directory("staging/incoming", &[]).await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    assert!(made.header("etag").is_some_and(|e| e.len() > 2));
    assert!(
        made.header("last-modified")
            .is_some_and(|t| t.ends_with("GMT"))
    );

    let listed = w.list("include=permissions").await;
    assert_eq!(listed.names(), ["staging", "staging/incoming"]);
    assert!(
        listed.blobs.iter().all(|b| b.resource_type == "directory"),
        "{listed:?}"
    );
    assert_eq!(listed.get("staging/incoming").access, Some(default_dir()));
    // In the emulator: empty blobs marked as directories.
    let held = lake::entries(&w.lab.src, "data", false)
        .await
        .expect("entries");
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(
        held.iter()
            .all(|e| e.metadata.get("hdi_isfolder").map(String::as_str) == Some("true")),
        "{held:?}"
    );

    w.create_directory("staging/incoming", &[("If-None-Match", "*")])
        .await
        .assert_error(StatusCode::CONFLICT, "PathAlreadyExists", true);
    let again = w.create_directory("staging/incoming", &[]).await;
    assert_eq!(again.status, StatusCode::CREATED, "{again:?}");

    lake::put(&w.lab.src, "data", "file.txt", b"x")
        .await
        .expect("put");
    w.create_directory("file.txt", &[]).await.assert_error(
        StatusCode::CONFLICT,
        "ResourceTypeMismatch",
        true,
    );
    w.create_directory("file.txt", &[("If-None-Match", "*")])
        .await
        .assert_error(StatusCode::CONFLICT, "ResourceTypeMismatch", true);
    w.create_directory("file.txt/below", &[])
        .await
        .assert_error(StatusCode::CONFLICT, "PathConflict", true);

    // The request's access control instead of the inherited one.
    let acl = "user::rwx,group::r-x,other::--x";
    let with_acl = w
        .create_directory("shared", &[("x-ms-acl", acl), ("x-ms-group", "analysts")])
        .await;
    assert_eq!(with_acl.status, StatusCode::CREATED, "{with_acl:?}");
    assert_eq!(
        w.get_access("shared").await.access(),
        access("$superuser", "analysts", "rwxr-x--x", acl)
    );
    // The documentation's example: p 0777, umask 0057, "the resulting permission is 0720".
    let masked = w
        .create_directory(
            "masked",
            &[("x-ms-permissions", "0777"), ("x-ms-umask", "0057")],
        )
        .await;
    assert_eq!(masked.status, StatusCode::CREATED, "{masked:?}");
    assert_eq!(
        w.get_access("masked").await.access().permissions,
        "rwx-w----"
    );
    let listed = w.list("").await;
    assert_eq!(
        listed.names(),
        [
            "file.txt",
            "masked",
            "shared",
            "staging",
            "staging/incoming"
        ]
    );
}

/// A default ACL on a directory is inherited by what is created below it afterwards, by
/// Put Blob through the façade's blob endpoint and by Path - Create alike (a directory
/// also takes it as its own default ACL, and the owning group comes from the parent);
/// what existed before keeps its own, also a file written to the emulator directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_paths_inherit_the_default_acl_of_their_directory() {
    let w = World::start("hns-inherit", false).await;
    let made = w.create_directory("landing", &[]).await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    w.put_through("landing/before.csv", b"1").await;
    lake::put(&w.lab.src, "data", "landing/direct.csv", b"2")
        .await
        .expect("put");
    assert_eq!(
        w.facade.access("data", "landing/before.csv"),
        Some(default_file())
    );
    assert_eq!(
        w.facade.access("data", "landing/direct.csv"),
        None,
        "not seen yet"
    );

    let defaults = "default:user::rwx,default:group::r-x,default:user:etl:rwx,\
                    default:mask::rwx,default:other::---";
    let set = w
        .set_access(
            "landing",
            &[
                ("x-ms-acl", &format!("{DIR_ACL},{defaults}")),
                ("x-ms-group", "data-eng"),
            ],
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");

    w.put_through("landing/after.csv", b"3").await;
    w.put_through("landing/sub/deep.csv", b"4").await;
    let made = w.create_directory("landing/made", &[]).await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");

    let inherited_acl = "user::rwx,group::r-x,user:etl:rwx,mask::rwx,other::---";
    let file = access("$superuser", "data-eng", "rwxrwx---+", inherited_acl);
    let dir = access(
        "$superuser",
        "data-eng",
        "rwxrwx---+",
        &format!("{inherited_acl},{defaults}"),
    );
    assert_eq!(
        w.facade.access("data", "landing/after.csv"),
        Some(file.clone())
    );
    assert_eq!(w.facade.access("data", "landing/sub"), Some(dir.clone()));
    assert_eq!(w.facade.access("data", "landing/made"), Some(dir.clone()));
    // The directory below passes it on again.
    let deep = access("$superuser", "data-eng", "rwxrwx---+", inherited_acl);
    assert_eq!(w.facade.access("data", "landing/sub/deep.csv"), Some(deep));

    let listed = w.list("include=permissions").await;
    assert_eq!(listed.get("landing/after.csv").access, Some(file));
    assert_eq!(listed.get("landing/made").access, Some(dir));
    // Created before the default ACL: their own, unchanged (the one written directly was
    // first seen when the façade read the container for setAccessControl).
    assert_eq!(
        listed.get("landing/before.csv").access,
        Some(default_file())
    );
    assert_eq!(
        listed.get("landing/direct.csv").access,
        Some(default_file())
    );
    assert_eq!(
        w.get_access("landing/direct.csv").await.access(),
        default_file()
    );
}

/// A caller without owner rights (not a super-user) cannot change the owner, by
/// setAccessControl or at create; the refusal changes nothing, and what it may change
/// still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facade_without_owner_rights_refuses_to_change_the_owner() {
    let w = World::start("hns-no-chown", true).await;
    lake::put(&w.lab.src, "data", "x.csv", b"x")
        .await
        .expect("put");

    w.set_access(
        "x.csv",
        &[
            ("x-ms-owner", "mallory"),
            ("x-ms-acl", "user::rwx,group::rwx,other::rwx"),
        ],
    )
    .await
    .assert_error(
        StatusCode::FORBIDDEN,
        "AuthorizationPermissionMismatch",
        true,
    );
    assert_eq!(w.get_access("x.csv").await.access(), default_file());
    assert_eq!(w.facade.access("data", "x.csv"), Some(default_file()));

    let group = w.set_access("x.csv", &[("x-ms-group", "finance")]).await;
    assert_eq!(group.status, StatusCode::OK, "{group:?}");
    assert_eq!(
        w.get_access("x.csv").await.access(),
        access("$superuser", "finance", "rw-r-----", FILE_ACL)
    );

    w.create_directory("owned", &[("x-ms-owner", "mallory")])
        .await
        .assert_error(
            StatusCode::FORBIDDEN,
            "AuthorizationPermissionMismatch",
            true,
        );
    assert_eq!(
        w.list("").await.names(),
        ["x.csv"],
        "no directory was created"
    );
    assert_eq!(w.facade.access("data", "owned"), None);
}

/// On an overwrite the ACL stays (it is stored on the path, not inherited again); a delete
/// through the façade drops it, and the path written again inherits the default ACL its
/// directory has then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwrite_keeps_the_acl_and_a_rewrite_after_delete_inherits_afresh() {
    let w = World::start("hns-rewrite", false).await;
    let made = w.create_directory("dir", &[]).await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    let first = "default:user::rw-,default:group::r--,default:user:alice:r--,default:other::---";
    let set = w
        .set_access("dir", &[("x-ms-acl", &format!("{DIR_ACL},{first}"))])
        .await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");

    w.put_through("dir/f.csv", b"one").await;
    let inherited = access(
        "$superuser",
        "$superuser",
        "rw-r-----+",
        "user::rw-,group::r--,user:alice:r--,other::---",
    );
    assert_eq!(w.facade.access("data", "dir/f.csv"), Some(inherited));

    let own = "user::rw-,group::---,other::---";
    let set = w.set_access("dir/f.csv", &[("x-ms-acl", own)]).await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    let kept = access("$superuser", "$superuser", "rw-------", own);
    w.put_through("dir/f.csv", b"two").await;
    assert_eq!(w.facade.access("data", "dir/f.csv"), Some(kept.clone()));
    assert_eq!(w.get_access("dir/f.csv").await.access(), kept);

    let second = "default:user::rwx,default:group::---,default:user:bob:rw-,default:other::---";
    let set = w
        .set_access("dir", &[("x-ms-acl", &format!("{DIR_ACL},{second}"))])
        .await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    w.through
        .blob("data", "dir/f.csv")
        .expect("client")
        .delete(None)
        .await
        .expect("delete through the façade");
    assert_eq!(
        w.facade.access("data", "dir/f.csv"),
        None,
        "dropped with the path"
    );
    w.get_access("dir/f.csv")
        .await
        .assert_error(StatusCode::NOT_FOUND, "PathNotFound", false);

    w.put_through("dir/f.csv", b"three").await;
    let afresh = access(
        "$superuser",
        "$superuser",
        "rwx------+",
        "user::rwx,group::---,user:bob:rw-,other::---",
    );
    assert_eq!(w.facade.access("data", "dir/f.csv"), Some(afresh.clone()));
    assert_eq!(w.get_access("dir/f.csv").await.access(), afresh);
}
