//! The instances of every task service a worker calls, and the choice of one per call.
//!
//! Per service the pool keeps one [`InstanceConnection`] per address: the static addresses of
//! the configuration plus the live registrations in Redis, re-read every
//! `discovery_interval`. A call goes to the ready instance with the fewest calls in flight
//! (ties broken at random). Instances whose registration expired are dropped; instances whose
//! connection died are skipped while their connection is rebuilt.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use rand::seq::IndexedRandom;
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::call::{CallLimits, ExternalCall};
use crate::config::{normalize_url, ConfigError, ExternalConfig, Token};
use crate::connection::{
    ConnectionSettings, Credentials, InstanceConnection, InstanceState, Origin,
};
use crate::discovery::{Discovery, DiscoveryError};
use crate::error::ExternalError;
use crate::keys::validate_service_name;

/// A snapshot of one instance, for logs, metrics and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStatus {
    /// The service.
    pub service: String,
    /// The instance's address.
    pub url: String,
    /// Its instance id, once it said hello.
    pub instance: Option<String>,
    /// Connection state.
    pub state: InstanceState,
    /// Calls in flight on it.
    pub in_flight: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only whole-map inserts/removals happen under these locks; a poisoned one is consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct ServiceEntry {
    name: String,
    /// Addresses from the configuration (normalized); never dropped.
    static_urls: BTreeSet<String>,
    /// Address → connection.
    instances: Mutex<HashMap<String, Arc<InstanceConnection>>>,
    /// Serializes refreshes of this service and remembers when the last one ran.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    /// Notified whenever one of its connections changes state.
    changed: Arc<Notify>,
}

struct PoolInner {
    credentials: Credentials,
    discovery: Option<Discovery>,
    settings: ConnectionSettings,
    limits: CallLimits,
    discovery_interval: Duration,
    ready_wait: Duration,
    services: Mutex<HashMap<String, Arc<ServiceEntry>>>,
}

/// The worker's client for external tasks: discovery, connections and calls.
///
/// Create it inside a tokio runtime; dropping it (or [`ServicePool::close`]) closes every
/// connection and stops the discovery refresh.
pub struct ServicePool {
    inner: Arc<PoolInner>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for ServicePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServicePool")
            .field("discovery", &self.inner.discovery)
            .field(
                "services",
                &lock(&self.inner.services).keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ServicePool {
    /// Builds the pool from a validated configuration, the loaded token and, when services
    /// register in Redis, a Redis pool for discovery. Connections to the static addresses
    /// start at once; discovered services are looked up on their first call and then every
    /// `discovery_interval`.
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration does not validate or its `tls.ca_file` cannot
    /// be used.
    pub fn new(
        config: &ExternalConfig,
        token: Token,
        redis: Option<gleitzeit_queue::SharedConnection>,
    ) -> Result<ServicePool, ConfigError> {
        config.validate()?;
        // Connections and the refresher are tasks; without a runtime there is nowhere to run
        // them (and spawning would panic).
        tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError("the service pool must be created inside a tokio runtime".to_owned())
        })?;
        let discovery = match redis {
            Some(redis) => Some(
                Discovery::new(redis, config.namespace.clone())
                    .map_err(|e| ConfigError(e.to_string()))?,
            ),
            None => None,
        };
        let credentials = Credentials {
            token,
            tls: config.tls_connector()?,
        };
        let inner = Arc::new(PoolInner {
            credentials,
            discovery,
            settings: ConnectionSettings {
                connect_timeout: config.connect_timeout,
                reconnect_min: config.reconnect_min,
                reconnect_max: config.reconnect_max,
            },
            limits: CallLimits {
                default_timeout: config.default_call_timeout,
                timeout_grace: config.timeout_grace,
                max_result_bytes: config.max_result_bytes,
            },
            discovery_interval: config.discovery_interval,
            ready_wait: config.ready_wait,
            services: Mutex::new(HashMap::new()),
        });
        for svc in &config.services {
            let entry = inner.entry(&svc.name, svc.urls.iter().map(|u| normalize_url(u)));
            // Static instances connect right away; discovered ones join at the first refresh.
            entry.reconcile(&inner, &BTreeSet::new(), false);
        }
        let cancel = CancellationToken::new();
        tokio::spawn(refresh_loop(
            Arc::downgrade(&inner),
            inner.discovery_interval,
            cancel.clone(),
        ));
        Ok(ServicePool { inner, cancel })
    }

    /// Calls a function of a service on one of its instances.
    ///
    /// Waits up to `ready_wait` for an instance that is still connecting. Does not retry on
    /// another instance by itself: a failed call is reported (with [`ExternalError::retryable`])
    /// and the worker's retry picks an instance again.
    ///
    /// # Errors
    /// See [`ExternalError`].
    pub async fn call(&self, call: ExternalCall) -> Result<Value, ExternalError> {
        validate_service_name(&call.service).map_err(ExternalError::InvalidCall)?;
        if call.function.is_empty() {
            return Err(ExternalError::InvalidCall(
                "the function name must not be empty".to_owned(),
            ));
        }
        let entry = self.inner.entry(&call.service, std::iter::empty());
        let connection = self.pick_or_wait(&entry, self.inner.ready_wait).await?;
        connection.call(&call, &self.inner.limits).await
    }

    /// Waits until `service` has at least `min_ready` ready instances, at most `timeout`;
    /// returns how many are ready. Useful at start-up and in tests.
    ///
    /// # Errors
    /// `NoInstance` when fewer are ready at the deadline (its detail names instances that
    /// failed the handshake), `Discovery` when Redis fails, `InvalidCall` for an invalid name.
    pub async fn wait_ready(
        &self,
        service: &str,
        min_ready: usize,
        timeout: Duration,
    ) -> Result<usize, ExternalError> {
        validate_service_name(service).map_err(ExternalError::InvalidCall)?;
        let entry = self.inner.entry(service, std::iter::empty());
        let deadline = Instant::now() + timeout;
        loop {
            let changed = entry.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let ready = lock(&entry.instances)
                .values()
                .filter(|c| c.state().is_ready())
                .count();
            if ready >= min_ready.max(1) {
                return Ok(ready);
            }
            if Instant::now() >= deadline {
                if ready == 0 {
                    // The same diagnosis a call would get.
                    self.pick_or_wait(&entry, Duration::ZERO).await?;
                }
                return Err(ExternalError::NoInstance {
                    service: service.to_owned(),
                    detail: Some(format!("{ready} of {min_ready} instances ready")),
                });
            }
            let empty = lock(&entry.instances).is_empty();
            if empty && self.inner.discovery.is_some() {
                entry
                    .refresh(&self.inner, self.inner.discovery_interval / 2)
                    .await
                    .map_err(|e| ExternalError::Discovery {
                        service: service.to_owned(),
                        message: e.to_string(),
                    })?;
            }
            // New registrations arrive with the periodic refresh, which notifies `changed`;
            // the short sleep bounds the wait for a refresh that found nothing new.
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline.min(Instant::now() + self.inner.discovery_interval)) => {}
            }
        }
    }

    /// Re-reads the instances of `service` from Redis now (also done every
    /// `discovery_interval`).
    ///
    /// # Errors
    /// `Discovery` when Redis fails, `InvalidCall` for an invalid name.
    pub async fn refresh(&self, service: &str) -> Result<(), ExternalError> {
        validate_service_name(service).map_err(ExternalError::InvalidCall)?;
        let entry = self.inner.entry(service, std::iter::empty());
        entry
            .refresh(&self.inner, Duration::ZERO)
            .await
            .map_err(|e| ExternalError::Discovery {
                service: service.to_owned(),
                message: e.to_string(),
            })
    }

    /// A snapshot of every known instance, ordered by service and address.
    pub fn status(&self) -> Vec<InstanceStatus> {
        let entries: Vec<Arc<ServiceEntry>> =
            lock(&self.inner.services).values().cloned().collect();
        let mut out = Vec::new();
        for entry in entries {
            for (url, conn) in lock(&entry.instances).iter() {
                let state = conn.state();
                let instance = match &state {
                    InstanceState::Ready(hello) => Some(hello.instance.clone()),
                    _ => None,
                };
                out.push(InstanceStatus {
                    service: entry.name.clone(),
                    url: url.clone(),
                    instance,
                    state,
                    in_flight: conn.in_flight(),
                });
            }
        }
        out.sort_by(|a, b| (&a.service, &a.url).cmp(&(&b.service, &b.url)));
        out
    }

    /// Receivers of the state of every instance of `service` known now (empty when none),
    /// ordered by address.
    pub fn subscribe(&self, service: &str) -> Vec<watch::Receiver<InstanceState>> {
        let entry = lock(&self.inner.services).get(service).cloned();
        let Some(entry) = entry else {
            return Vec::new();
        };
        let mut conns: Vec<(String, watch::Receiver<InstanceState>)> = lock(&entry.instances)
            .iter()
            .map(|(url, c)| (url.clone(), c.subscribe()))
            .collect();
        conns.sort_by(|a, b| a.0.cmp(&b.0));
        conns.into_iter().map(|(_, rx)| rx).collect()
    }

    /// Closes every connection (their pending calls fail as disconnected) and stops the
    /// discovery refresh.
    pub async fn close(&self) {
        self.cancel.cancel();
        let entries: Vec<Arc<ServiceEntry>> =
            lock(&self.inner.services).drain().map(|(_, e)| e).collect();
        for entry in entries {
            let conns: Vec<Arc<InstanceConnection>> =
                lock(&entry.instances).drain().map(|(_, c)| c).collect();
            for conn in conns {
                conn.close().await;
            }
        }
    }

    async fn pick_or_wait(
        &self,
        entry: &Arc<ServiceEntry>,
        wait: Duration,
    ) -> Result<Arc<InstanceConnection>, ExternalError> {
        let deadline = Instant::now() + wait;
        let mut refreshed_now = false;
        // Instances found unreachable and asked to try again now, with their attempt count at
        // that moment: the call waits for that one attempt, not for every later one.
        let mut poked: HashMap<String, u64> = HashMap::new();
        loop {
            // Registered before looking, so a change between the look and the wait is seen.
            let changed = entry.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();

            let conns: Vec<Arc<InstanceConnection>> =
                lock(&entry.instances).values().cloned().collect();
            if let Some(conn) = pick(&conns) {
                return Ok(conn);
            }
            if conns.is_empty() && !refreshed_now && self.inner.discovery.is_some() {
                // First call of the service, or every instance expired: look in Redis now
                // rather than waiting for the next periodic refresh.
                refreshed_now = true;
                if let Err(err) = entry.refresh(&self.inner, Duration::from_millis(500)).await {
                    return Err(ExternalError::Discovery {
                        service: entry.name.clone(),
                        message: err.to_string(),
                    });
                }
                continue;
            }
            let mut connecting = 0;
            let mut down = 0;
            let mut awaited = 0;
            let mut auth_refused = None;
            let mut misconfigured = None;
            for conn in &conns {
                match conn.state() {
                    InstanceState::Connecting => {
                        connecting += 1;
                        awaited += 1;
                    }
                    InstanceState::Down { .. } => {
                        down += 1;
                        match poked.get(conn.url()) {
                            None => {
                                // It may be back (a restarted service): try now instead of
                                // after the backoff, and wait for that attempt.
                                poked.insert(conn.url().to_owned(), conn.attempts());
                                conn.reconnect_soon();
                                awaited += 1;
                            }
                            Some(at) if conn.attempts() == *at => awaited += 1,
                            Some(_) => {}
                        }
                    }
                    InstanceState::Misconfigured { auth: true, reason } => {
                        auth_refused = Some((conn.url().to_owned(), reason))
                    }
                    InstanceState::Misconfigured { reason, .. } => misconfigured = Some(reason),
                    InstanceState::Ready(_) | InstanceState::Closed => {}
                }
            }
            let now = Instant::now();
            if awaited > 0 && now < deadline {
                tokio::select! {
                    _ = &mut changed => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                continue;
            }
            // An instance that failed the handshake is never used, but the call is not failed
            // for it: whoever can write a registration could otherwise fail tasks at will.
            // Like any missing instance it defers the task until a proven instance is up.
            let detail = if let Some((url, reason)) = auth_refused {
                Some(format!("authentication failed with {url}: {reason}"))
            } else if conns.is_empty() {
                Some(if self.inner.discovery.is_some() {
                    "none registered".to_owned()
                } else {
                    "not configured and no discovery".to_owned()
                })
            } else if let Some(reason) = misconfigured {
                Some(format!("misconfigured: {reason}"))
            } else {
                Some(format!(
                    "{} known: {connecting} connecting, {down} unreachable",
                    conns.len()
                ))
            };
            return Err(ExternalError::NoInstance {
                service: entry.name.clone(),
                detail,
            });
        }
    }
}

impl Drop for ServicePool {
    fn drop(&mut self) {
        // Stops the refresher; the connections close when their last handle (the map) drops.
        self.cancel.cancel();
    }
}

/// The ready connection with the fewest calls in flight; ties at random, so equal instances
/// share the load.
fn pick(conns: &[Arc<InstanceConnection>]) -> Option<Arc<InstanceConnection>> {
    let ready: Vec<(usize, &Arc<InstanceConnection>)> = conns
        .iter()
        .filter(|c| c.state().is_ready())
        .map(|c| (c.in_flight(), c))
        .collect();
    let least = ready.iter().map(|(n, _)| *n).min()?;
    let best: Vec<&Arc<InstanceConnection>> = ready
        .iter()
        .filter(|(n, _)| *n == least)
        .map(|(_, c)| *c)
        .collect();
    best.choose(&mut rand::rng()).map(|c| Arc::clone(c))
}

impl PoolInner {
    /// The entry of a service, created (with these static addresses) on first use.
    fn entry(&self, service: &str, static_urls: impl Iterator<Item = String>) -> Arc<ServiceEntry> {
        lock(&self.services)
            .entry(service.to_owned())
            .or_insert_with(|| {
                Arc::new(ServiceEntry {
                    name: service.to_owned(),
                    static_urls: static_urls.collect(),
                    instances: Mutex::new(HashMap::new()),
                    refreshed: tokio::sync::Mutex::new(None),
                    changed: Arc::new(Notify::new()),
                })
            })
            .clone()
    }
}

impl ServiceEntry {
    /// Reads the registrations (unless the last read is younger than `min_age`) and
    /// reconciles the connections with them.
    async fn refresh(&self, pool: &PoolInner, min_age: Duration) -> Result<(), DiscoveryError> {
        let Some(discovery) = &pool.discovery else {
            self.reconcile(pool, &BTreeSet::new(), false);
            return Ok(());
        };
        let mut last = self.refreshed.lock().await;
        if let Some(at) = *last {
            if !min_age.is_zero() && at.elapsed() < min_age {
                return Ok(());
            }
        }
        let records = discovery.live_instances(&self.name).await?;
        *last = Some(Instant::now());
        let live: BTreeSet<String> = records.iter().map(|r| normalize_url(&r.url)).collect();
        self.reconcile(pool, &live, true);
        Ok(())
    }

    /// Connects to every wanted address not connected yet and, when `drop_missing`, closes the
    /// connections to discovered addresses that are no longer registered.
    fn reconcile(&self, pool: &PoolInner, discovered: &BTreeSet<String>, drop_missing: bool) {
        let mut removed = Vec::new();
        {
            let mut instances = lock(&self.instances);
            let wanted = self
                .static_urls
                .iter()
                .map(|url| (url, Origin::Static))
                .chain(
                    discovered
                        .iter()
                        .filter(|url| !self.static_urls.contains(*url))
                        .map(|url| (url, Origin::Discovered)),
                );
            for (url, origin) in wanted {
                if !instances.contains_key(url) {
                    tracing::debug!(service = %self.name, %url, "new task service instance");
                    let conn = InstanceConnection::spawn(
                        self.name.clone(),
                        url.clone(),
                        origin,
                        pool.credentials.clone(),
                        pool.settings,
                        self.changed.clone(),
                    );
                    instances.insert(url.clone(), Arc::new(conn));
                }
            }
            if drop_missing {
                instances.retain(|url, conn| {
                    let keep = self.static_urls.contains(url) || discovered.contains(url);
                    if !keep {
                        removed.push(conn.clone());
                    }
                    keep
                });
            }
        }
        for conn in removed {
            tracing::info!(service = %self.name, url = %conn.url(),
                "task service instance no longer registered; closing its connection");
            // Dropping the last handle closes it; calls still running on it hold their own
            // handle and finish (or fail) first.
            drop(conn);
        }
        self.changed.notify_waiters();
    }
}

async fn refresh_loop(pool: Weak<PoolInner>, interval: Duration, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(pool) = pool.upgrade() else { return };
        if pool.discovery.is_none() {
            continue;
        }
        let entries: Vec<Arc<ServiceEntry>> = lock(&pool.services).values().cloned().collect();
        for entry in entries {
            // Half an interval: a refresh a call just did is recent enough.
            if let Err(err) = entry.refresh(&pool, interval / 2).await {
                // Known instances stay in use while Redis is unreachable.
                tracing::warn!(service = %entry.name, error = %err,
                    "reading service registrations failed; keeping the known instances");
            }
        }
    }
}
