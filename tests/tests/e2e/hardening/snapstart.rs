//! SnapStart: nothing fetched during Init, everything again after restore, and the restore
//! seen by the first request after it (an after-restore hook), before any INVOKE.

use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;
use lockbox_tests::check::{cache_header, value_of, WAIT};
use lockbox_tests::client::{parameter_path, secret_path};
use lockbox_tests::sandbox::ClockShift;
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

#[tokio::test(flavor = "multi_thread")]
async fn snapstart_restore_is_seen_by_the_first_request_so_an_after_restore_hook_reads_fresh_values(
) -> anyhow::Result<()> {
    // The extension's wall clock, to move as a restore moves it.
    let clock = ClockShift::build()?;
    let clock_env = clock.env();
    let lockbox = Fixture::new()
        .await?
        .param("/snap/hook", "before-snapshot")
        .secret("snap/hook-secret", "secret-before-snapshot")
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
        .envs(&clock_env.each_ref().map(|(k, v)| (k.as_str(), v.as_str())))
        .start()
        .await?;
    let (moto, sandbox, proxy, client) = (
        &lockbox.moto,
        &lockbox.sandbox,
        &lockbox.proxy,
        &lockbox.client,
    );
    let parameter = parameter_path("/snap/hook", &[]);
    let secret = secret_path("snap/hook-secret", &[]);

    // Function code reads during its Init: cached, and so part of the snapshot.
    for (path, value) in [
        (&parameter, "before-snapshot"),
        (&secret, "secret-before-snapshot"),
    ] {
        assert_eq!(value_of(&client.get(path).await?).as_deref(), Some(value));
        assert_eq!(cache_header(&client.get(path).await?), "hit");
    }

    // Frozen without a restore (the wall clock keeps pace): the cache stays.
    sandbox.freeze()?;
    sandbox.thaw()?;
    assert_eq!(cache_header(&client.get(&parameter).await?), "hit");

    // The snapshot: frozen, days pass, the values are rotated, then the restore sets the
    // wall clock to the real time while the monotonic clock carries on.
    sandbox.freeze()?;
    moto.put_param("/snap/hook", "after-restore", ParameterType::String, None)
        .await?;
    moto.put_secret_value("snap/hook-secret", "secret-after-restore")
        .await?;
    clock.advance(Duration::from_secs(3 * 86_400))?;
    sandbox.thaw()?;
    proxy.reset_counts();

    // An after-restore hook reads before any INVOKE: nothing from before the snapshot.
    let hook = client.get(&parameter).await?;
    assert_eq!(value_of(&hook).as_deref(), Some("after-restore"));
    assert_eq!(
        cache_header(&hook),
        "miss",
        "fetched again after the restore"
    );
    let hook = client.get(&secret).await?;
    assert_eq!(value_of(&hook).as_deref(), Some("secret-after-restore"));
    assert_eq!(cache_header(&hook), "miss");
    assert_eq!(proxy.total(), 2, "{:?}", proxy.call_counts());
    sandbox
        .wait_log_line("restored from a snapshot", WAIT)
        .await?;

    // Forgotten once: what was fetched after the restore is cached as usual.
    assert_eq!(cache_header(&client.get(&parameter).await?), "hit");
    // The first INVOKE, after the hooks, serves the new values too.
    let after_invoke = sandbox
        .invoke_with(|| async { client.get(&parameter).await })
        .await??;
    assert_eq!(value_of(&after_invoke).as_deref(), Some("after-restore"));
    Ok(())
}
