//! Entra ID (bearer token) requests over https, against an emulator that checks each
//! token's issuer, audience and lifetime. The credential here mints unsigned tokens (the
//! emulator does not check signatures); the managed identity, workload identity, client
//! secret and developer tools kinds hand the same pipeline real tokens from Entra ID.

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::RequestContent;
use lakevault_common::error::{FailureClass, classify};
use lakevault_common::queue::{AzureQueue, WorkQueue};
use lakevault_common::storage::{NetworkOptions, StorageAccount};
use lakevault_tests::azurite::{Azurite, SOURCE_ACCOUNT, Tls};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use time::{Duration, OffsetDateTime};

#[derive(Debug)]
struct MintedTokens {
    audience: &'static str,
    requests: AtomicUsize,
}

#[async_trait::async_trait]
impl TokenCredential for MintedTokens {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        assert_eq!(scopes, ["https://storage.azure.com/.default"]);
        self.requests.fetch_add(1, Ordering::SeqCst);
        let now = OffsetDateTime::now_utc();
        let expires = now + Duration::hours(1);
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let header = azure_core::base64::encode_url_safe(r#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "aud": self.audience,
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "tid": tenant,
            "oid": "00000000-0000-0000-0000-00000000000a",
            "iat": now.unix_timestamp() - 60,
            "nbf": now.unix_timestamp() - 60,
            "exp": expires.unix_timestamp(),
        });
        let payload = azure_core::base64::encode_url_safe(claims.to_string());
        let signature = azure_core::base64::encode_url_safe("not-a-real-signature");
        Ok(AccessToken::new(
            Secret::new(format!("{header}.{payload}.{signature}")),
            expires,
        ))
    }
}

fn account(az: &Azurite, tls: &Tls, credential: Arc<MintedTokens>) -> StorageAccount {
    let network = NetworkOptions {
        extra_ca_files: vec![tls.cert.clone()],
        ..Default::default()
    };
    StorageAccount::with_token_credential(
        "entra",
        SOURCE_ACCOUNT,
        az.blob_endpoint(SOURCE_ACCOUNT).parse().expect("url"),
        az.queue_endpoint(SOURCE_ACCOUNT).parse().expect("url"),
        credential,
        network,
    )
    .expect("account")
}

#[tokio::test]
async fn bearer_tokens_over_https_reach_blob_and_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = Tls::self_signed(dir.path()).expect("certificate");
    let az = Azurite::start_https(&tls).expect("azurite over https");

    let good = Arc::new(MintedTokens {
        audience: "https://storage.azure.com",
        requests: AtomicUsize::new(0),
    });
    let acct = account(&az, &tls, good.clone());
    let container = acct.container("entra").expect("client");
    container
        .create(None)
        .await
        .expect("create container with a bearer token");
    acct.blob("entra", "dir/ü file.txt")
        .expect("client")
        .upload(RequestContent::from(b"token body".to_vec()), None)
        .await
        .expect("upload with a bearer token");
    assert!(
        acct.blob("entra", "dir/ü file.txt")
            .expect("client")
            .exists()
            .await
            .expect("read")
    );
    let queue = AzureQueue::new("entraq", acct.queue("entraq").expect("queue"));
    queue.ensure_exists().await.expect("create queue");
    queue
        .send("hello", std::time::Duration::ZERO)
        .await
        .expect("send");
    assert_eq!(
        queue
            .receive(1, std::time::Duration::from_secs(10))
            .await
            .expect("receive")
            .len(),
        1
    );
    assert!(
        good.requests.load(Ordering::SeqCst) >= 1,
        "the pipeline asked the credential"
    );

    // A token for another audience is refused, and classified as a credential failure.
    let wrong = Arc::new(MintedTokens {
        audience: "https://vault.azure.net",
        requests: AtomicUsize::new(0),
    });
    let err = account(&az, &tls, wrong)
        .container("entra")
        .expect("client")
        .exists()
        .await
        .expect_err("wrong audience refused");
    assert_eq!(classify(&err), FailureClass::Auth, "{err}");
}

#[tokio::test]
async fn a_user_delegation_sas_from_an_entra_credential_reads_one_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = Tls::self_signed(dir.path()).expect("certificate");
    let az = Azurite::start_https(&tls).expect("azurite over https");
    let credential = Arc::new(MintedTokens {
        audience: "https://storage.azure.com",
        requests: AtomicUsize::new(0),
    });
    let acct = account(&az, &tls, credential)
        .with_copy_source_auth(lakevault_common::config::CopySourceAuth::UserDelegationSas);
    acct.container("udk")
        .expect("client")
        .create(None)
        .await
        .expect("container");
    let name = "dir/ü file+1.txt";
    acct.blob("udk", name)
        .expect("client")
        .upload(RequestContent::from(b"delegated".to_vec()), None)
        .await
        .expect("upload");

    let source = acct
        .copy_source("udk", name, None, std::time::Duration::from_secs(3600))
        .await
        .expect("copy source");
    assert!(source.authorization.is_none(), "a SAS, not a bearer token");
    assert!(source.url.contains("skoid=") && source.url.contains("sig="));
    // What the backup service would do with it: read the blob with nothing but the URL.
    let pem = std::fs::read(&tls.cert).expect("cert");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .build()
        .expect("client");
    let response = http
        .get(&source.url)
        .header("x-ms-version", "2022-11-02")
        .send()
        .await
        .expect("GET");
    assert_eq!(
        response.status().as_u16(),
        200,
        "{:?}",
        response.text().await
    );
    assert_eq!(response.bytes().await.expect("body").as_ref(), b"delegated");
    // The SAS names one blob: another one in the container is refused.
    let other = source.url.replace("file%2B1", "file%2B2");
    let refused = http
        .get(&other)
        .header("x-ms-version", "2022-11-02")
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status().as_u16(), 403);
}
