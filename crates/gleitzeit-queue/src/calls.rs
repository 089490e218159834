//! How a [`Queue`] talks to Redis: every non-blocking request over the one shared
//! connection (`link.rs`), the calls of the function library (loaded when Redis lacks it,
//! with `WAIT` for replicas when asked), and dedicated connections for blocking reads.

use deadpool_redis::redis::{self, Cmd, FromRedisValue, ScriptInvocation, Value};

use crate::connection::{Conn, Timeouts};
use crate::error::QueueError;
use crate::queue::Queue;
use crate::scripts::Call;

impl Queue {
    /// Sends a request on the shared connection: `send` gets a handle on it; a connection
    /// the request's error may have broken is replaced before the next call. Every
    /// non-blocking request of the handle goes through here.
    async fn on_link<T, F, Fut>(&self, send: F) -> Result<T, QueueError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, QueueError>>,
    {
        let lease = self.inner.link.get().await?;
        let res = send(lease.conn.clone()).await;
        self.inner.link.settle(lease, &res);
        res
    }

    /// Runs one command on the shared connection ([`Queue::on_link`]).
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, QueueError> {
        self.on_link(|mut conn| async move { Ok(cmd.query_async::<T>(&mut conn).await?) })
            .await
    }

    /// Runs a pipeline on the shared connection ([`Queue::on_link`]).
    pub(crate) async fn query_pipe<T: FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, QueueError> {
        self.on_link(|mut conn| async move { Ok(pipe.query_async::<T>(&mut conn).await?) })
            .await
    }

    /// Calls a function of the library. When Redis does not know it (a new server, a
    /// restart without persistence, `FUNCTION FLUSH`), the library is loaded and the call
    /// made once more.
    pub(crate) async fn invoke(&self, call: &Call) -> Result<Value, QueueError> {
        match self.fcall(call).await {
            Err(QueueError::Redis(e)) if is_missing_function(&e) => {
                self.load_library().await?;
                self.fcall(call).await
            }
            other => other,
        }
    }

    async fn fcall(&self, call: &Call) -> Result<Value, QueueError> {
        self.query(&call.command())
            .await
            .map_err(|e| self.name_script(e))
    }

    /// [`Queue::invoke`] followed by `WAIT replica_acks replica_ack_timeout` in the same
    /// write on the same connection (`WAIT` counts the replicas that have this connection's
    /// writes, so it must not go out on another one): the function's reply and the count.
    pub(crate) async fn invoke_replicated(&self, call: &Call) -> Result<(Value, u64), QueueError> {
        let cfg = &self.inner.cfg;
        let mut pipe = redis::pipe();
        pipe.add_command(call.command())
            .cmd("WAIT")
            .arg(cfg.replica_acks)
            .arg(cfg.replica_ack_timeout.as_millis() as u64);
        let run = || async {
            self.query_pipe::<(Value, u64)>(&pipe)
                .await
                .map_err(|e| self.name_script(e))
        };
        match run().await {
            Err(QueueError::Redis(e)) if is_missing_function(&e) => {
                self.load_library().await?;
                run().await
            }
            other => other,
        }
    }

    /// `FUNCTION LOAD` of this version's library; one already loaded (by another process
    /// of the same version) is fine.
    async fn load_library(&self) -> Result<(), QueueError> {
        tracing::info!(library = %self.inner.scripts.library_name, "loading the function library");
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg(&self.inner.scripts.library);
        match self.query::<Value>(&cmd).await {
            Ok(_) => Ok(()),
            Err(QueueError::Redis(e)) if e.to_string().contains("already exists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs an `EVAL` script (the permission probe, which must run before anything else).
    pub(crate) async fn invoke_script(
        &self,
        inv: &ScriptInvocation<'_>,
    ) -> Result<Value, QueueError> {
        self.on_link(|mut conn| async move { Ok(inv.invoke_async::<Value>(&mut conn).await?) })
            .await
    }

    /// A refusal inside a function names the function; this puts its script's file name
    /// there.
    pub(crate) fn name_script(&self, err: QueueError) -> QueueError {
        match err {
            QueueError::NoPermission(mut d) => {
                if let Some(name) = d
                    .script
                    .as_deref()
                    .and_then(|s| self.inner.scripts.name_of(s))
                {
                    d.script = Some(name.to_owned());
                }
                QueueError::NoPermission(d)
            }
            other => other,
        }
    }

    /// A fresh connection without a response timeout, for blocking commands (the caller
    /// bounds them with its own timeout and drops the connection afterwards).
    pub(crate) async fn dedicated(&self) -> Result<Conn, QueueError> {
        let timeouts = Timeouts {
            connect: self.inner.cfg.response_timeout,
            response: None,
        };
        Ok(self.inner.connector.connect(timeouts).await?)
    }
}

/// Redis does not know the function called (`ERR Function not found`).
fn is_missing_function(err: &redis::RedisError) -> bool {
    err.to_string().contains("Function not found")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::codes::ScriptCode;
    use crate::types::QueueConfig;

    /// The names of the function libraries loaded in Redis.
    async fn libraries(queue: &Queue) -> Vec<String> {
        let v: Value = queue
            .query(redis::cmd("FUNCTION").arg("LIST"))
            .await
            .unwrap();
        let Value::Array(libs) = v else {
            panic!("{v:?}")
        };
        let mut names = Vec::new();
        for lib in libs {
            let fields: Vec<(String, Value)> = match lib {
                Value::Array(items) => items
                    .chunks(2)
                    .map(|c| {
                        (
                            String::from_redis_value(c[0].clone()).unwrap(),
                            c[1].clone(),
                        )
                    })
                    .collect(),
                Value::Map(pairs) => pairs
                    .into_iter()
                    .map(|(k, v)| (String::from_redis_value(k).unwrap(), v))
                    .collect(),
                other => panic!("{other:?}"),
            };
            for (k, v) in fields {
                if k == "library_name" {
                    names.push(String::from_redis_value(v).unwrap());
                }
            }
        }
        names.sort();
        names
    }

    #[tokio::test]
    async fn the_library_is_loaded_when_redis_lacks_it_beside_other_versions() {
        let (_redis, queue) = crate::types::test_queue().await;
        // Another version's library is already there; it stays.
        let other = "#!lua name=gleitzeit_000000000000\n\
            redis.register_function('gleitzeit_000000000000_cancel', function() return 6 end)";
        let _: Value = queue
            .query(redis::cmd("FUNCTION").arg("LOAD").arg(other))
            .await
            .unwrap();
        assert_eq!(libraries(&queue).await, ["gleitzeit_000000000000"]);
        // The first call loads this version's library.
        assert_eq!(
            queue.cancel("no-such-workflow", 1).await.unwrap(),
            ScriptCode::NotFound
        );
        let ours = queue.inner.scripts.library_name.clone();
        let mut both = vec!["gleitzeit_000000000000".to_owned(), ours.clone()];
        both.sort();
        assert_eq!(libraries(&queue).await, both);
        // After FUNCTION FLUSH (or a restart without persistence) it is loaded again.
        let _: Value = queue
            .query(redis::cmd("FUNCTION").arg("FLUSH"))
            .await
            .unwrap();
        assert_eq!(
            queue.cancel("no-such-workflow", 1).await.unwrap(),
            ScriptCode::NotFound
        );
        assert_eq!(libraries(&queue).await, [ours]);
    }

    /// `connected_clients` from `INFO clients`, read over a separate connection.
    async fn connected_clients(redis: &gleitzeit_testkit::redis::RedisServer) -> u64 {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut conn)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .map(|n| n.trim().parse().unwrap())
            .unwrap()
    }

    /// A server that accepts connections and never answers (a black-holed Redis): callers
    /// that queue up behind one attempt to connect share its failure instead of each
    /// waiting out a connect timeout of their own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_waiting_for_a_failing_connect_share_its_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(sock);
            }
        });
        let cfg = QueueConfig {
            response_timeout: std::time::Duration::from_secs(2),
            ..QueueConfig::default()
        };
        let queue = Queue::new(format!("redis://127.0.0.1:{port}/"), cfg).unwrap();
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let q = queue.clone();
                tokio::spawn(async move { q.ping().await })
            })
            .collect();
        for c in callers {
            let err = c.await.unwrap().unwrap_err();
            assert!(err.is_retryable(), "{err}");
        }
        let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..8).contains(&n), "{n} connections for 8 callers");
        server.abort();
    }

    #[tokio::test]
    async fn concurrent_calls_share_one_connection_and_a_killed_one_is_replaced() {
        let (redis, queue) = crate::types::test_queue().await;
        let pings: Vec<_> = (0..64)
            .map(|_| {
                let q = queue.clone();
                tokio::spawn(async move { q.ping().await })
            })
            .collect();
        for p in pings {
            p.await.unwrap().unwrap();
        }
        // The queue's one connection, and the one reading INFO.
        assert_eq!(connected_clients(&redis).await, 2);

        // The server drops every normal connection: the next call may fail once, with a
        // retryable error, and the one after it runs on a new connection.
        let client = redis::Client::open(redis.url()).unwrap();
        let mut admin = client.get_multiplexed_async_connection().await.unwrap();
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("SKIPME")
            .arg("yes")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut admin)
            .await
            .unwrap();
        if let Err(e) = queue.ping().await {
            assert!(e.is_retryable(), "{e}");
            queue.ping().await.unwrap();
        }
        queue.ping().await.unwrap();
    }
}
