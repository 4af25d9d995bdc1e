//! One opening for the end-to-end tests: moto, what it holds, the proxy and the extension.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use lockbox_tests::Fixture;
//! let lockbox = Fixture::new()
//!     .await?
//!     .param("/app/flag", "on")
//!     .secure("/app/password", "hunter2")
//!     .secret("app/db", r#"{"user":"app"}"#)
//!     .env("LOCKBOX_PREFETCH", "ssm:/app/flag")
//!     .start()
//!     .await?;
//! let answer = lockbox.client.get_parameter("/app/flag", &[]).await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`Fixture::new`] starts moto at once, so a test can seed what the builder does not cover
//! (labels, several versions, its own keys) through [`Fixture::moto`] before it chains.
//! The seeds are written in the order given, when the extension is started.

use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;

use crate::client::ExtClient;
use crate::moto::Moto;
use crate::proxy::{DownMode, Proxy};
use crate::sandbox::Sandbox;
use crate::{spawn_behind, start_lockbox_behind};

/// The alias of the customer-managed key [`Fixture::secure`] encrypts with.
pub const FIXTURE_KEY_ALIAS: &str = "alias/lockbox-e2e";

/// What a test wants in place before the extension starts. Built by chaining, consumed by
/// [`Fixture::start`] or [`Fixture::launch`].
#[derive(Debug)]
pub struct Fixture {
    moto: Moto,
    seeds: Vec<Seed>,
    env: Vec<(String, String)>,
    latency: Option<Duration>,
    down: Option<DownMode>,
}

/// One thing to write into moto.
#[derive(Debug)]
enum Seed {
    Parameter {
        name: String,
        value: String,
        kind: ParameterType,
    },
    /// A SecureString under the fixture's key (created once, on the first of these).
    Secure {
        name: String,
        value: String,
    },
    Secret {
        name: String,
        value: String,
    },
}

/// A running extension and everything around it, dropped together at the end of a test.
#[derive(Debug)]
pub struct Lockbox {
    /// The local AWS; the test may keep writing to it.
    pub moto: Moto,
    /// The counting, fault-injecting proxy between the extension and moto.
    pub proxy: Proxy,
    /// The extension under Lambda's sandbox.
    pub sandbox: Sandbox,
    /// Function code's client for the extension's port and token.
    pub client: ExtClient,
    /// The key id of [`FIXTURE_KEY_ALIAS`] when a [`Fixture::secure`] seed created it.
    pub key_id: Option<String>,
}

impl Fixture {
    /// Starts moto; nothing is written to it yet.
    pub async fn new() -> anyhow::Result<Fixture> {
        Ok(Fixture {
            moto: Moto::start().await?,
            seeds: Vec::new(),
            env: Vec::new(),
            latency: None,
            down: None,
        })
    }

    /// The local AWS, for seeding the builder does not cover.
    pub fn moto(&self) -> &Moto {
        &self.moto
    }

    /// A String parameter.
    pub fn param(self, name: &str, value: &str) -> Self {
        self.param_of(name, value, ParameterType::String)
    }

    /// A parameter of any type; a SecureString given here uses the account's default key.
    pub fn param_of(mut self, name: &str, value: &str, kind: ParameterType) -> Self {
        self.seeds.push(Seed::Parameter {
            name: name.to_owned(),
            value: value.to_owned(),
            kind,
        });
        self
    }

    /// A SecureString parameter encrypted with the fixture's customer-managed key
    /// ([`FIXTURE_KEY_ALIAS`]).
    pub fn secure(mut self, name: &str, value: &str) -> Self {
        self.seeds.push(Seed::Secure {
            name: name.to_owned(),
            value: value.to_owned(),
        });
        self
    }

    /// A secret whose first (AWSCURRENT) version holds `value`.
    pub fn secret(mut self, name: &str, value: &str) -> Self {
        self.seeds.push(Seed::Secret {
            name: name.to_owned(),
            value: value.to_owned(),
        });
        self
    }

    /// An environment variable for the extension, applied after the sandbox's defaults (so
    /// it can override them; a later call for the same name wins).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Several environment variables, as [`Fixture::env`].
    pub fn envs(mut self, vars: &[(&str, &str)]) -> Self {
        self.env.extend(
            vars.iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        self
    }

    /// Every AWS call through the proxy takes `latency` longer, from the extension's first
    /// call on.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }

    /// AWS is down (as `mode` says) from the extension's first call on.
    pub fn down(mut self, mode: DownMode) -> Self {
        self.down = Some(mode);
        self
    }

    /// Writes the seeds, starts the proxy and the extension, and waits until the extension
    /// has finished Init (its first `next`).
    pub async fn start(self) -> anyhow::Result<Lockbox> {
        self.run(true).await
    }

    /// As [`Fixture::start`], without waiting for anything once the process is started: for
    /// tests that watch Init as it happens or expect it to fail.
    pub async fn launch(self) -> anyhow::Result<Lockbox> {
        self.run(false).await
    }

    async fn run(self, wait_for_init: bool) -> anyhow::Result<Lockbox> {
        let Fixture {
            moto,
            seeds,
            env,
            latency,
            down,
        } = self;
        let mut key_id = None;
        for seed in seeds {
            match seed {
                Seed::Parameter { name, value, kind } => {
                    moto.put_param(&name, &value, kind, None).await?;
                }
                Seed::Secure { name, value } => {
                    let key = match &key_id {
                        Some(key) => key,
                        None => key_id.insert(moto.create_cmk(FIXTURE_KEY_ALIAS).await?),
                    };
                    moto.put_param(&name, &value, ParameterType::SecureString, Some(key))
                        .await?;
                }
                Seed::Secret { name, value } => {
                    moto.create_secret(&name, &value).await?;
                }
            }
        }
        let proxy = Proxy::start(&moto.endpoint()).await?;
        if let Some(latency) = latency {
            proxy.set_latency(latency);
        }
        if let Some(mode) = down {
            proxy.set_down(mode);
        }
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let (sandbox, client) = if wait_for_init {
            spawn_behind(&proxy, &env).await?
        } else {
            start_lockbox_behind(&proxy, &env).await?
        };
        Ok(Lockbox {
            moto,
            proxy,
            sandbox,
            client,
            key_id,
        })
    }
}
