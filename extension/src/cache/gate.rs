//! The prefetch gate: while Init loads what `LOCKBOX_PREFETCH` names, a request for one of
//! those values waits for it instead of making a second AWS call or failing.

use std::collections::HashSet;

use tokio::sync::watch;

use super::KeyRef;

/// Lets requests wait for a prefetch in progress. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PrefetchGate {
    running: watch::Receiver<bool>,
    names: std::sync::Arc<HashSet<String>>,
    paths: std::sync::Arc<Vec<String>>,
    secrets: std::sync::Arc<HashSet<String>>,
}

/// Opens the gate when prefetch ends (or its budget runs out). Dropping it opens it too.
#[derive(Debug)]
pub struct GateOpener(watch::Sender<bool>);

impl GateOpener {
    /// Lets every waiting request go on.
    pub fn open(self) {
        let _ = self.0.send(false);
    }
}

impl PrefetchGate {
    /// A gate that never waits (no prefetch).
    pub fn open() -> Self {
        Self::closed_for(HashSet::new(), Vec::new(), HashSet::new()).0
    }

    /// A gate closed, until the returned opener is used, for reads of the parameter
    /// `names`, of anything under the `paths`, and of the `secrets`. With nothing to cover
    /// it is open from the start.
    pub fn closed_for(
        names: HashSet<String>,
        paths: Vec<String>,
        secrets: HashSet<String>,
    ) -> (Self, GateOpener) {
        let running = !(names.is_empty() && paths.is_empty() && secrets.is_empty());
        let (tx, rx) = watch::channel(running);
        let gate = Self {
            running: rx,
            names: names.into(),
            paths: paths.into(),
            secrets: secrets.into(),
        };
        (gate, GateOpener(tx))
    }

    pub(crate) fn covers(&self, key: KeyRef<'_>) -> bool {
        match key {
            KeyRef::Parameter { name, .. } => {
                self.names.contains(name) || self.paths.iter().any(|p| name.starts_with(p.as_str()))
            }
            KeyRef::Path { path, .. } => self.paths.iter().any(|p| path.starts_with(p.as_str())),
            // Prefetch reads no keyring.
            KeyRef::Keyring { .. } => false,
            KeyRef::Secret { id, .. } => self.secrets.contains(id),
        }
    }

    /// Waits, if the key is being prefetched, until prefetch ends. Once prefetch is over
    /// (nearly every request), this looks at one flag and nothing of the key.
    pub async fn wait_for(&self, key: KeyRef<'_>) {
        if !*self.running.borrow() || !self.covers(key) {
            return;
        }
        let mut running = self.running.clone();
        // An error means the opener is gone: prefetch is over either way.
        let _ = running.wait_for(|r| !*r).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Scope;

    #[tokio::test]
    async fn gate_waits_only_for_covered_keys_while_running() {
        let (gate, opener) = PrefetchGate::closed_for(
            HashSet::from(["/a".to_owned()]),
            vec!["/p/".to_owned()],
            HashSet::from(["s".to_owned()]),
        );
        let scope = Scope::default();
        let key = |name| KeyRef::Parameter {
            scope: &scope,
            name,
            selector: None,
            decrypt: true,
        };
        assert!(gate.covers(key("/a")));
        assert!(gate.covers(key("/p/deep/x")));
        assert!(!gate.covers(key("/other")));
        // Not covered: returns at once although the gate is closed.
        gate.wait_for(key("/other")).await;
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move {
                let scope = Scope::default();
                gate.wait_for(KeyRef::Parameter {
                    scope: &scope,
                    name: "/a",
                    selector: None,
                    decrypt: true,
                })
                .await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        opener.open();
        waiter.await.unwrap();
    }

    #[test]
    fn a_gate_with_nothing_to_cover_is_open() {
        assert!(!*PrefetchGate::open().running.borrow());
    }
}
