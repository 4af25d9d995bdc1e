//! The key gate: resolve the chosen KMS key and refuse it unless it is fit to protect
//! rotated values.
//!
//! SSM happily writes under the AWS-managed `aws/ssm` key (it is the default), reports a
//! disabled key only as `InvalidKeyId` in the middle of a run, and local emulators accept
//! any key at all, so the rotator checks the key with `DescribeKey` before any write: Enabled,
//! `SYMMETRIC_DEFAULT`, `ENCRYPT_DECRYPT`, `KeyManager=CUSTOMER`. The error names the key
//! and the failed check. Every write then passes the resolved key ARN.

use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::types::{KeyManagerType, KeyMetadata, KeySpec, KeyState, KeyUsageType};

/// A key that passed the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKey {
    /// What the input named (id, ARN, alias name or alias ARN).
    pub requested: String,
    /// The key's ARN: passed as `KeyId` on every write and reported in the results.
    pub arn: String,
    /// The bare key id (UUID), to recognise values already stored under this key.
    pub key_id: String,
}

impl ResolvedKey {
    /// Whether a `KeyId` recorded by SSM or Secrets Manager names this key.
    ///
    /// Only the key's own ARN or id counts. SSM records `KeyId` as the writer passed it,
    /// and an alias (`alias/app`, or its ARN) names whatever key it pointed at when the
    /// value was written: after the alias moves, the same text means another key. A value
    /// recorded under an alias is therefore never taken to be under this key; writing it
    /// again records the key's ARN.
    pub fn matches(&self, recorded: &str) -> bool {
        recorded == self.arn || recorded == self.key_id
    }
}

/// The check a key failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailedCheck {
    /// The name is an `alias/aws/...` alias, which only AWS-managed keys can have.
    #[error("{0} is an AWS-managed key alias (alias/aws/...); choose a customer-managed key")]
    ReservedAlias(String),
    /// `KeyState` is not `Enabled`.
    #[error("KeyState is {0}, must be Enabled")]
    NotEnabled(String),
    /// `KeySpec` is not `SYMMETRIC_DEFAULT`.
    #[error("KeySpec is {0}, must be SYMMETRIC_DEFAULT (SSM encrypts only with symmetric keys)")]
    NotSymmetric(String),
    /// `KeyUsage` is not `ENCRYPT_DECRYPT`.
    #[error("KeyUsage is {0}, must be ENCRYPT_DECRYPT")]
    WrongUsage(String),
    /// `KeyManager` is not `CUSTOMER`.
    #[error("KeyManager is {0}, must be CUSTOMER (a customer-managed key)")]
    NotCustomerManaged(String),
    /// `DescribeKey` returned no ARN.
    #[error("DescribeKey returned no key ARN")]
    NoArn,
}

/// The key gate refused the key or could not check it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key failed a check.
    #[error("key {key} refused: {check}")]
    Refused {
        /// The key as named in the input (and its ARN when known).
        key: String,
        /// What is wrong with it.
        check: FailedCheck,
    },
    /// No such key or alias.
    #[error("key {key} refused: not found ({detail})")]
    NotFound {
        /// The key as named in the input.
        key: String,
        /// The service's message.
        detail: String,
    },
    /// `DescribeKey` failed for another reason (permissions, network).
    #[error("key {key}: DescribeKey failed: {detail}")]
    Describe {
        /// The key as named in the input.
        key: String,
        /// The error and its code.
        detail: String,
    },
}

/// The facts the gate looks at, taken from `DescribeKey`'s `KeyMetadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    /// `Arn`.
    pub arn: Option<String>,
    /// `KeyId`.
    pub key_id: String,
    /// `KeyState`.
    pub state: Option<String>,
    /// `KeySpec`.
    pub spec: Option<String>,
    /// `KeyUsage`.
    pub usage: Option<String>,
    /// `KeyManager`.
    pub manager: Option<String>,
}

impl From<&KeyMetadata> for KeyFacts {
    fn from(m: &KeyMetadata) -> Self {
        Self {
            arn: m.arn().map(str::to_owned),
            key_id: m.key_id().to_owned(),
            state: m.key_state().map(|s| s.as_str().to_owned()),
            spec: m.key_spec().map(|s| s.as_str().to_owned()),
            usage: m.key_usage().map(|s| s.as_str().to_owned()),
            manager: m.key_manager().map(|s| s.as_str().to_owned()),
        }
    }
}

/// Whether `key` names an `alias/aws/...` alias (plain or as an alias ARN).
fn is_reserved_alias(key: &str) -> bool {
    key.starts_with("alias/aws/") || (key.starts_with("arn:") && key.contains(":alias/aws/"))
}

/// Applies the gate to `DescribeKey`'s answer for `requested`.
pub fn check(requested: &str, facts: &KeyFacts) -> Result<ResolvedKey, KeyError> {
    let named = |arn: &Option<String>| match arn {
        Some(arn) if arn != requested => format!("{requested} ({arn})"),
        _ => requested.to_owned(),
    };
    let refuse = |check| KeyError::Refused {
        key: named(&facts.arn),
        check,
    };
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "missing".to_owned());
    if facts.state.as_deref() != Some(KeyState::Enabled.as_str()) {
        return Err(refuse(FailedCheck::NotEnabled(show(&facts.state))));
    }
    if facts.spec.as_deref() != Some(KeySpec::SymmetricDefault.as_str()) {
        return Err(refuse(FailedCheck::NotSymmetric(show(&facts.spec))));
    }
    if facts.usage.as_deref() != Some(KeyUsageType::EncryptDecrypt.as_str()) {
        return Err(refuse(FailedCheck::WrongUsage(show(&facts.usage))));
    }
    if facts.manager.as_deref() != Some(KeyManagerType::Customer.as_str()) {
        return Err(refuse(FailedCheck::NotCustomerManaged(show(
            &facts.manager,
        ))));
    }
    let arn = facts
        .arn
        .clone()
        .ok_or_else(|| refuse(FailedCheck::NoArn))?;
    Ok(ResolvedKey {
        requested: requested.to_owned(),
        arn,
        key_id: facts.key_id.clone(),
    })
}

/// Resolves `requested` with `DescribeKey` and applies the gate.
pub async fn resolve(kms: &aws_sdk_kms::Client, requested: &str) -> Result<ResolvedKey, KeyError> {
    // Checked before asking KMS: such an alias can only ever name an AWS-managed key.
    if is_reserved_alias(requested) {
        return Err(KeyError::Refused {
            key: requested.to_owned(),
            check: FailedCheck::ReservedAlias(requested.to_owned()),
        });
    }
    let out = kms
        .describe_key()
        .key_id(requested)
        .send()
        .await
        .map_err(|e| {
            let detail = aws_sdk_kms::error::DisplayErrorContext(&e).to_string();
            if e.code() == Some("NotFoundException") {
                KeyError::NotFound {
                    key: requested.to_owned(),
                    detail: e.message().unwrap_or("NotFoundException").to_owned(),
                }
            } else {
                KeyError::Describe {
                    key: requested.to_owned(),
                    detail,
                }
            }
        })?;
    let meta = out.key_metadata().ok_or_else(|| KeyError::Describe {
        key: requested.to_owned(),
        detail: "response had no KeyMetadata".into(),
    })?;
    check(requested, &KeyFacts::from(meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> KeyFacts {
        KeyFacts {
            arn: Some("arn:aws:kms:us-east-1:111122223333:key/k-1".into()),
            key_id: "k-1".into(),
            state: Some("Enabled".into()),
            spec: Some("SYMMETRIC_DEFAULT".into()),
            usage: Some("ENCRYPT_DECRYPT".into()),
            manager: Some("CUSTOMER".into()),
        }
    }

    #[test]
    fn an_enabled_symmetric_customer_key_passes() {
        let k = check("alias/app", &good()).unwrap();
        assert_eq!(k.arn, "arn:aws:kms:us-east-1:111122223333:key/k-1");
        assert!(k.matches("k-1"));
        assert!(k.matches("arn:aws:kms:us-east-1:111122223333:key/k-1"));
        assert!(
            !k.matches("alias/app"),
            "an alias names whatever key it points at now"
        );
        assert!(!k.matches("alias/aws/ssm"));
    }

    #[test]
    fn each_failed_check_is_named_with_the_key() {
        type Breaker = fn(&mut KeyFacts);
        let cases: [(Breaker, &str); 4] = [
            (
                |f| f.state = Some("Disabled".into()),
                "KeyState is Disabled",
            ),
            (
                |f| f.spec = Some("RSA_2048".into()),
                "KeySpec is RSA_2048, must be SYMMETRIC_DEFAULT",
            ),
            (
                |f| f.usage = Some("SIGN_VERIFY".into()),
                "KeyUsage is SIGN_VERIFY",
            ),
            (|f| f.manager = Some("AWS".into()), "KeyManager is AWS"),
        ];
        for (break_it, expected) in cases {
            let mut facts = good();
            break_it(&mut facts);
            let msg = check("alias/app", &facts).unwrap_err().to_string();
            assert!(msg.contains(expected), "{msg}");
            assert!(msg.contains("alias/app"), "{msg}");
            assert!(msg.contains("key/k-1"), "{msg}");
        }
    }

    #[test]
    fn pending_deletion_is_not_enabled() {
        let mut facts = good();
        facts.state = Some("PendingDeletion".into());
        assert!(matches!(
            check("k-1", &facts),
            Err(KeyError::Refused {
                check: FailedCheck::NotEnabled(_),
                ..
            })
        ));
    }

    #[test]
    fn aws_reserved_aliases_are_recognised() {
        assert!(is_reserved_alias("alias/aws/ssm"));
        assert!(is_reserved_alias(
            "arn:aws:kms:us-east-1:111122223333:alias/aws/secretsmanager"
        ));
        assert!(!is_reserved_alias("alias/app-secrets"));
        assert!(!is_reserved_alias("alias/awsome"));
    }
}
