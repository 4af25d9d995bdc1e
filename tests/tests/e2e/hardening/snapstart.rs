//! SnapStart: nothing fetched during Init, everything again after restore.

use aws_sdk_ssm::types::ParameterType;
use lockbox_tests::check::{cache_header, value_of, WAIT};
use lockbox_tests::client::{parameter_path, secret_path};
use lockbox_tests::Fixture;

#[tokio::test(flavor = "multi_thread")]
async fn snapstart_fetches_nothing_during_init_and_everything_again_after_restore(
) -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/snap/planned", "before-snapshot")
        .param("/snap/unplanned", "before-snapshot-u")
        .secret("snap/secret", "secret-before-snapshot")
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
        .env("LOCKBOX_PREFETCH", "ssm:/snap/planned,secret:snap/secret")
        .start()
        .await?;
    let (moto, sandbox, proxy, client) = (
        &lockbox.moto,
        &lockbox.sandbox,
        &lockbox.proxy,
        &lockbox.client,
    );
    // Init is what the snapshot captures: nothing was fetched into it.
    assert_eq!(
        proxy.total(),
        0,
        "AWS called during Init: {:?}",
        proxy.call_counts()
    );

    // Function code reads during its own Init: served (on demand), and so in the snapshot.
    for (path, value) in [
        (parameter_path("/snap/planned", &[]), "before-snapshot"),
        (parameter_path("/snap/unplanned", &[]), "before-snapshot-u"),
        (secret_path("snap/secret", &[]), "secret-before-snapshot"),
    ] {
        assert_eq!(value_of(&client.get(&path).await?).as_deref(), Some(value));
    }

    // Days pass between the snapshot and a restore; the values change meanwhile.
    moto.put_param(
        "/snap/planned",
        "after-restore",
        ParameterType::String,
        None,
    )
    .await?;
    moto.put_param(
        "/snap/unplanned",
        "after-restore-u",
        ParameterType::String,
        None,
    )
    .await?;
    moto.put_secret_value("snap/secret", "secret-after-restore")
        .await?;
    proxy.reset_counts();

    // The first INVOKE after the restore clears the cache and loads the plan before the
    // extension calls `next` again.
    sandbox.invoke(WAIT).await?;
    assert!(
        proxy.total() > 0,
        "the plan was not loaded on the first invoke"
    );
    let loaded = proxy.total();
    let planned = client.get_parameter("/snap/planned", &[]).await?;
    assert_eq!(value_of(&planned).as_deref(), Some("after-restore"));
    assert_eq!(
        cache_header(&planned),
        "hit",
        "prefetched on the first invoke"
    );
    let secret = client.get_secret("snap/secret", &[]).await?;
    assert_eq!(value_of(&secret).as_deref(), Some("secret-after-restore"));
    assert_eq!(cache_header(&secret), "hit");
    assert_eq!(proxy.total(), loaded);
    // Not in the plan, but read before the snapshot: forgotten, so fetched again.
    let unplanned = client.get_parameter("/snap/unplanned", &[]).await?;
    assert_eq!(value_of(&unplanned).as_deref(), Some("after-restore-u"));
    assert_eq!(cache_header(&unplanned), "miss");

    // Only the first invoke after the restore does this; later ones keep the cache.
    moto.put_param("/snap/planned", "later", ParameterType::String, None)
        .await?;
    sandbox.invoke(WAIT).await?;
    let planned = client.get_parameter("/snap/planned", &[]).await?;
    assert_eq!(value_of(&planned).as_deref(), Some("after-restore"));
    assert_eq!(cache_header(&planned), "hit");
    Ok(())
}
