//! Shared Key signing and SAS generation against a real Azurite, and the `sas` credential
//! kind: a generated token works, a read-only token cannot write, an expired token is
//! refused before any request, and a token file is re-read when it changes.

use azure_core::http::RequestContent;
use azure_storage_blob::BlobClient;
use lakevault_common::config::AccountConfig;
use lakevault_common::sas::{self, SasResource};
use lakevault_common::secret::SecretString;
use lakevault_common::storage::{NetworkOptions, StorageAccount};
use lakevault_tests::azurite::{Azurite, BACKUP_ACCOUNT, BACKUP_KEY};
use time::{Duration, OffsetDateTime};

fn shared_key_account(az: &Azurite) -> StorageAccount {
    let config: AccountConfig = toml::from_str(&format!(
        "kind = \"shared_key\"\naccount_name = \"{BACKUP_ACCOUNT}\"\naccount_key = \"{BACKUP_KEY}\"\nblob_endpoint = \"{}\"\nqueue_endpoint = \"{}\"",
        az.blob_endpoint(BACKUP_ACCOUNT),
        az.queue_endpoint(BACKUP_ACCOUNT)
    ))
    .expect("account config");
    StorageAccount::from_config("backup", &config, NetworkOptions::default()).expect("account")
}

fn sas_account(
    az: &Azurite,
    token_field: &str,
) -> Result<StorageAccount, lakevault_common::storage::AccountError> {
    let config: AccountConfig = toml::from_str(&format!(
        "kind = \"sas\"\naccount_name = \"{BACKUP_ACCOUNT}\"\n{token_field}\nblob_endpoint = \"{}\"\nqueue_endpoint = \"{}\"",
        az.blob_endpoint(BACKUP_ACCOUNT),
        az.queue_endpoint(BACKUP_ACCOUNT)
    ))
    .expect("account config");
    StorageAccount::from_config("backup", &config, NetworkOptions::default())
}

#[tokio::test]
async fn shared_key_and_generated_sas_work_against_azurite() {
    let az = Azurite::start().expect("azurite");
    let account = shared_key_account(&az);
    let container = account.container("signed").expect("client");
    container
        .create(None)
        .await
        .expect("shared key create container");
    let name = "dir/ä b%c+d.txt";
    container
        .blob_client(name)
        .upload(RequestContent::from(b"signed body".to_vec()), None)
        .await
        .expect("shared key upload");

    // A read-only service SAS for that one blob, used without any other credential.
    let key = SecretString::new(BACKUP_KEY);
    let expiry = OffsetDateTime::now_utc() + Duration::hours(1);
    let token = sas::service_sas(
        BACKUP_ACCOUNT,
        &key,
        SasResource::Blob {
            container: "signed",
            blob: name,
        },
        "r",
        expiry,
    )
    .expect("sas");
    let url = format!("{}?{token}", container.blob_client(name).url());
    let anon = BlobClient::new(url.parse().expect("url"), None, None).expect("client");
    let props = anon.get_properties(None).await.expect("read with SAS");
    assert_eq!(
        azure_storage_blob::models::BlobClientGetPropertiesResultHeaders::content_length(&props)
            .expect("len"),
        Some(11)
    );
    let write = anon
        .upload(RequestContent::from(b"nope".to_vec()), None)
        .await;
    assert_eq!(
        write
            .expect_err("read-only SAS must not write")
            .http_status()
            .map(u16::from),
        Some(403)
    );

    // An account SAS as a `sas` credential: blob listing and queue operations.
    let account_token =
        sas::account_sas(BACKUP_ACCOUNT, &key, "rwdlacup", expiry).expect("account sas");
    let via_sas =
        sas_account(&az, &format!("sas_token = \"{account_token}\"")).expect("sas account");
    assert!(
        via_sas
            .container("signed")
            .expect("client")
            .exists()
            .await
            .expect("exists via SAS")
    );
    let queue =
        lakevault_common::queue::AzureQueue::new("sasq", via_sas.queue("sasq").expect("queue"));
    use lakevault_common::queue::WorkQueue;
    queue.ensure_exists().await.expect("create queue via SAS");
    queue
        .send("x", std::time::Duration::ZERO)
        .await
        .expect("send via SAS");
    assert_eq!(queue.approximate_len().await.expect("len"), 1);
}

#[tokio::test]
async fn expired_sas_is_refused_and_token_files_are_reread() {
    let az = Azurite::start().expect("azurite");
    let key = SecretString::new(BACKUP_KEY);
    let past = OffsetDateTime::now_utc() - Duration::hours(1);
    let expired = sas::account_sas(BACKUP_ACCOUNT, &key, "rl", past).expect("sas");
    let err =
        sas_account(&az, &format!("sas_token = \"{expired}\"")).expect_err("expired token refused");
    // As the binaries print it: the error and its causes.
    let shown = format!("{:#}", anyhow::Error::from(err));
    assert!(
        shown.contains("account `backup`") && shown.contains("expired at"),
        "{shown}"
    );

    // A token file that expires while the process runs stops requests with a credential
    // error; a fresh token written to the file is picked up without a restart.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token.sas");
    let soon = OffsetDateTime::now_utc() + Duration::seconds(3);
    std::fs::write(
        &file,
        sas::account_sas(BACKUP_ACCOUNT, &key, "rwdlacup", soon).expect("sas"),
    )
    .expect("write");
    let account =
        sas_account(&az, &format!("sas_token_file = \"{}\"", file.display())).expect("account");
    let service = account.blob_service().expect("client");
    service
        .blob_container_client("filetok")
        .create(None)
        .await
        .expect("works before expiry");
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let err = service
        .blob_container_client("filetok")
        .exists()
        .await
        .expect_err("expired token stops work");
    assert_eq!(
        lakevault_common::error::classify(&err),
        lakevault_common::error::FailureClass::Auth,
        "{err}"
    );
    let later = OffsetDateTime::now_utc() + Duration::hours(1);
    std::fs::write(
        &file,
        sas::account_sas(BACKUP_ACCOUNT, &key, "rwdlacup", later).expect("sas"),
    )
    .expect("rewrite");
    assert!(
        service
            .blob_container_client("filetok")
            .exists()
            .await
            .expect("re-read token works")
    );
}

#[tokio::test]
async fn near_limit_batches_fit_in_one_queue_message() {
    use lakevault_common::queue::WorkQueue;
    use lakevault_common::wire::{
        CopyBatch, CopyItem, Location, MAX_MESSAGE_BYTES, MessageKind, WIRE_VERSION, pack,
    };
    let az = Azurite::start().expect("azurite");
    let account = shared_key_account(&az);
    let queue =
        lakevault_common::queue::AzureQueue::new("big", account.queue("big").expect("queue"));
    queue.ensure_exists().await.expect("create");
    let header = CopyBatch {
        v: WIRE_VERSION,
        kind: MessageKind::Copy,
        job: "j".into(),
        attempt: 0,
        source: Location {
            account: "s".into(),
            container: "c".into(),
        },
        destination: Location {
            account: "d".into(),
            container: "c".into(),
        },
        lease: false,
        destination_prefix: None,
        overwrite: false,
        items: vec![],
        handed_back: 0,
        waits: 0,
        source_hierarchical: false,
        apply_access: false,
        carried: Default::default(),
    };
    // Quotes and '<' '&' grow when escaped into XML on the wire; the limit must still hold.
    let items: Vec<CopyItem> = (0..400)
        .map(|i| CopyItem {
            access: None,
            name: format!("dir \"<&>\"/ü-{i:04}-{}", "x".repeat(200)),
            etag: "0x8DC0000000000001".into(),
            size: 1,
            last_modified: "2026-11-22T00:00:00Z".into(),
            tags: Default::default(),
            snapshot: None,
            backup: Default::default(),
        })
        .collect();
    let (batches, too_big) = pack(&header, items, MAX_MESSAGE_BYTES);
    assert!(too_big.is_empty() && batches.len() >= 2);
    for b in &batches {
        queue
            .send(&b.encode(), std::time::Duration::ZERO)
            .await
            .expect("near-limit message accepted");
    }
    let got = queue
        .receive(32, std::time::Duration::from_secs(30))
        .await
        .expect("receive");
    let decoded: Vec<CopyBatch> = got
        .iter()
        .map(|m| CopyBatch::decode(&m.text).expect("decodes"))
        .collect();
    assert_eq!(decoded.iter().map(|b| b.items.len()).sum::<usize>(), 400);
}
