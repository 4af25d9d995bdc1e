//! Which kind of Lambda environment runs the extension, from
//! `AWS_LAMBDA_INITIALIZATION_TYPE`, and what each kind allows an extension to do.
//!
//! | mode | frozen between invokes | events | when lockbox refreshes |
//! |---|---|---|---|
//! | on-demand, provisioned concurrency | yes | INVOKE, SHUTDOWN | on each INVOKE |
//! | SnapStart | yes, and Init ends in a snapshot | INVOKE, SHUTDOWN | on each INVOKE; the cache is forgotten at a restore |
//! | Lambda Managed Instances | never | SHUTDOWN only (INVOKE is refused) | on a timer |

/// The kind of environment, as Lambda names it in `AWS_LAMBDA_INITIALIZATION_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LambdaMode {
    /// `on-demand`, and anything Lambda may add later: the classic lifecycle.
    #[default]
    OnDemand,
    /// `provisioned-concurrency`: the classic lifecycle, Init done ahead of invokes.
    ProvisionedConcurrency,
    /// `snap-start`: Init runs once, ends in a snapshot, and the snapshot is restored later
    /// (perhaps days later, perhaps many times).
    SnapStart,
    /// `lambda-managed-instances`: never frozen, many invocations at once, extensions may
    /// register for SHUTDOWN only.
    ManagedInstances,
}

impl LambdaMode {
    /// The mode `AWS_LAMBDA_INITIALIZATION_TYPE` names. An unknown value is the classic
    /// lifecycle: Lambda has added types before, and refusing to start would break a
    /// function that worked.
    pub fn from_initialization_type(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("snap-start") => LambdaMode::SnapStart,
            Some(v) if v.eq_ignore_ascii_case("provisioned-concurrency") => {
                LambdaMode::ProvisionedConcurrency
            }
            Some(v) if v.eq_ignore_ascii_case("lambda-managed-instances") => {
                LambdaMode::ManagedInstances
            }
            _ => LambdaMode::OnDemand,
        }
    }

    /// The events to register for. Managed Instances refuse INVOKE for external
    /// extensions (403 `Extension.InvalidEventType`, and Init fails).
    pub fn events(self) -> &'static [&'static str] {
        match self {
            LambdaMode::ManagedInstances => &["SHUTDOWN"],
            _ => &["INVOKE", "SHUTDOWN"],
        }
    }

    /// Whether background timers run: only where the environment is never frozen. Elsewhere
    /// a timer would stall with the environment and fire at random points after a thaw.
    pub fn runs_timers(self) -> bool {
        self == LambdaMode::ManagedInstances
    }

    /// Whether Init ends in a snapshot that is restored later.
    pub fn is_snap_start(self) -> bool {
        self == LambdaMode::SnapStart
    }

    /// The mode's name in logs, as Lambda spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LambdaMode::OnDemand => "on-demand",
            LambdaMode::ProvisionedConcurrency => "provisioned-concurrency",
            LambdaMode::SnapStart => "snap-start",
            LambdaMode::ManagedInstances => "lambda-managed-instances",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_initialization_type_is_its_mode_and_unknown_ones_are_classic() {
        for (value, mode) in [
            (None, LambdaMode::OnDemand),
            (Some("on-demand"), LambdaMode::OnDemand),
            (
                Some("provisioned-concurrency"),
                LambdaMode::ProvisionedConcurrency,
            ),
            (Some("snap-start"), LambdaMode::SnapStart),
            (Some("SNAP-START"), LambdaMode::SnapStart),
            (
                Some("lambda-managed-instances"),
                LambdaMode::ManagedInstances,
            ),
            (Some("something-new"), LambdaMode::OnDemand),
        ] {
            assert_eq!(
                LambdaMode::from_initialization_type(value),
                mode,
                "{value:?}"
            );
        }
    }

    #[test]
    fn managed_instances_register_for_shutdown_alone_and_run_timers() {
        assert_eq!(LambdaMode::ManagedInstances.events(), ["SHUTDOWN"]);
        assert!(LambdaMode::ManagedInstances.runs_timers());
        for mode in [
            LambdaMode::OnDemand,
            LambdaMode::ProvisionedConcurrency,
            LambdaMode::SnapStart,
        ] {
            assert_eq!(mode.events(), ["INVOKE", "SHUTDOWN"]);
            assert!(!mode.runs_timers());
        }
    }
}
