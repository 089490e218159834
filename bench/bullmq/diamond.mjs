// The BullMQ side of `gleitzeit-bench compare`: the benchmark's DAG workload on BullMQ.
//
//   node diamond.mjs --redis redis://127.0.0.1:6379/ --workflows 2000 --shape diamond \
//                    --workers 2 --concurrency 32 [--sim-url http://127.0.0.1:PORT] \
//                    [--timeout-s 600]
//
// Prints one JSON object on stdout (progress and errors go to stderr).
//
// Workload, as close to `gleitzeit-bench` as BullMQ allows (docs/benchmarks.md, "Side by side
// with BullMQ", says where it differs):
// - chain: one flow per workflow, six jobs nested parent ← child, so the innermost runs first
//   and each step reads its predecessor's result with getChildrenValues().
// - diamond: BullMQ flows are trees (a job has at most one parent), so one root that four
//   jobs depend on cannot be submitted as one flow. The submitter adds the root job; when the
//   root's processor has done its work it adds the flow join ← {b1, b2, b3, b4}, the branches
//   carrying the root's result in their data; the join reads the four results with
//   getChildrenValues(). Six jobs per workflow, three levels, as in Gleitzeit — but the
//   branches are enqueued by the root's processor just before the root is marked completed,
//   not in the same atomic step.
// - Every task either calls the OpenAI-compatible simulator given by --sim-url (one
//   non-streaming POST /v1/chat/completions, as a Gleitzeit worker makes one call per task)
//   or, without --sim-url, does nothing but return its prompt.
// - Workers are --workers separate node processes (this file with --worker), each one BullMQ
//   Worker with --concurrency.
// - Procedure: start the workers, run one warm-up workflow to completion, read `INFO cpu
//   commandstats stats` (one call), submit --workflows workflows one after another (each add awaited),
//   wait for every workflow's last job to complete (QueueEvents), read INFO again, then read
//   the last jobs' finishedOn. tasks/s = workflows × 6 / (last finishedOn − first
//   submission); latency = last job's finishedOn − the workflow's submission time.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { FlowProducer, Job, Queue, QueueEvents, Worker } from 'bullmq';
import { Redis } from 'ioredis';

const QUEUE = 'bench';
const TASKS_PER_WORKFLOW = 6;

function parseArgs(argv) {
  const out = {
    redis: null,
    workflows: 2000,
    shape: 'diamond',
    workers: 1,
    concurrency: 32,
    simUrl: null,
    timeoutS: 600,
    worker: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    const count = () => {
      const n = Number(value());
      if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} must be a whole number ≥ 1`);
      return n;
    };
    switch (flag) {
      case '--redis': out.redis = value(); break;
      case '--workflows': out.workflows = count(); break;
      case '--shape': out.shape = value(); break;
      case '--workers': out.workers = count(); break;
      case '--concurrency': out.concurrency = count(); break;
      case '--sim-url': out.simUrl = value(); break;
      case '--timeout-s': out.timeoutS = count(); break;
      case '--worker': out.worker = true; break;
      default: throw new Error(`unknown argument ${flag}`);
    }
  }
  if (!out.redis) throw new Error('--redis URL is required');
  if (out.shape !== 'diamond' && out.shape !== 'chain') {
    throw new Error('--shape must be diamond or chain');
  }
  return out;
}

/** ioredis options from a redis:// URL; workers need maxRetriesPerRequest null. */
function connection(url) {
  const u = new URL(url);
  const opts = {
    host: u.hostname,
    port: Number(u.port || 6379),
    maxRetriesPerRequest: null,
  };
  if (u.password) opts.password = decodeURIComponent(u.password);
  if (u.username) opts.username = decodeURIComponent(u.username);
  const db = u.pathname.replace('/', '');
  if (db) opts.db = Number(db);
  return opts;
}

/** The job id of a workflow's last job (the one whose completion ends the workflow). */
function lastJobId(shape, wf) {
  return shape === 'diamond' ? `${wf}-join` : `${wf}-s6`;
}

// ---------------------------------------------------------------- worker process

/** One task's work: a call to the simulator, or nothing. */
function makeWork(simUrl) {
  if (!simUrl) return async (prompt) => prompt;
  const url = new URL('/v1/chat/completions', simUrl).toString();
  return async (prompt) => {
    const resp = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'bench',
        messages: [{ role: 'user', content: prompt }],
        stream: false,
      }),
    });
    if (!resp.ok) throw new Error(`simulator answered ${resp.status}: ${await resp.text()}`);
    const body = await resp.json();
    return body.choices[0].message.content;
  };
}

/** The children's results in the order of their job ids (b1..b4), as the join's template. */
async function childResults(job) {
  const values = await job.getChildrenValues();
  return Object.keys(values).sort().map((k) => values[k]);
}

async function runWorker(args) {
  const conn = connection(args.redis);
  const work = makeWork(args.simUrl);
  const flows = new FlowProducer({ connection: conn });
  const processor = async (job) => {
    const { wf, created } = job.data;
    switch (job.name) {
      case 'root': {
        const result = await work('root');
        // The branches and the join become runnable once the root's work is done.
        await flows.add({
          name: 'join',
          queueName: QUEUE,
          data: { wf, created },
          opts: { jobId: `${wf}-join` },
          children: [1, 2, 3, 4].map((i) => ({
            name: 'branch',
            queueName: QUEUE,
            data: { wf, created, prompt: `b${i} ${result}` },
            opts: { jobId: `${wf}-b${i}` },
          })),
        });
        return result;
      }
      case 'branch':
        return work(job.data.prompt);
      case 'join':
        return work((await childResults(job)).join(' '));
      case 'step': {
        const step = job.data.step;
        if (step === 1) return work('step');
        const [previous] = await childResults(job);
        return work(`s${step} ${previous}`);
      }
      default:
        throw new Error(`unknown job name ${job.name}`);
    }
  };
  const worker = new Worker(QUEUE, processor, { connection: conn, concurrency: args.concurrency });
  worker.on('failed', (job, err) => console.error(`job ${job?.id} failed: ${err.message}`));
  await worker.waitUntilReady();
  const stop = async () => {
    await worker.close();
    await flows.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // The driver holds our stdin open: when it ends (the driver exited, however), stop too.
  process.stdin.resume();
  process.stdin.on('end', stop);
  process.stdout.write('ready\n');
}

// ---------------------------------------------------------------- driver

/** Every worker process started, to be killed if the driver fails. */
const workerProcesses = [];

/** Starts one worker process and resolves when it has said it is ready. */
function startWorker(args) {
  const self = fileURLToPath(import.meta.url);
  const argv = [self, '--worker', '--redis', args.redis, '--concurrency', String(args.concurrency)];
  if (args.simUrl) argv.push('--sim-url', args.simUrl);
  const child = spawn(process.execPath, argv, { stdio: ['pipe', 'pipe', 'inherit'] });
  workerProcesses.push(child);
  return new Promise((resolve, reject) => {
    let seen = '';
    child.stdout.on('data', (chunk) => {
      seen += chunk;
      if (seen.includes('ready\n')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`worker process exited with ${code} before it was ready`)));
    child.on('error', reject);
  });
}

/** Submits workflow `wf`: the root job (diamond) or the whole nested flow (chain). */
async function submit(shape, queue, flows, wf) {
  const created = Date.now();
  if (shape === 'diamond') {
    await queue.add('root', { wf, created }, { jobId: `${wf}-root` });
    return;
  }
  let node = null;
  for (let step = 1; step <= TASKS_PER_WORKFLOW; step++) {
    node = {
      name: 'step',
      queueName: QUEUE,
      data: { wf, created, step },
      opts: { jobId: `${wf}-s${step}` },
      ...(node ? { children: [node] } : {}),
    };
  }
  await flows.add(node);
}

/** Nearest-rank percentile of sorted numbers (as gleitzeit-bench's stats::percentile). */
function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(Math.max(rank, 1), sorted.length) - 1];
}

async function info(client) {
  // One call for the three sections, as the Rust side reads them (one instant).
  return client.call('INFO', 'cpu', 'commandstats', 'stats');
}

async function runDriver(args) {
  const conn = connection(args.redis);
  const queue = new Queue(QUEUE, { connection: conn });
  const flows = new FlowProducer({ connection: conn });
  const events = new QueueEvents(QUEUE, { connection: conn });
  await Promise.all([queue.waitUntilReady(), flows.waitUntilReady(), events.waitUntilReady()]);
  // A connection of its own for INFO (the queue's client is the library's business).
  const client = new Redis(conn);

  // Completion of each workflow's last job, announced through the events stream.
  const waiting = new Map();
  const done = new Set();
  events.on('completed', ({ jobId }) => {
    done.add(jobId);
    const resolve = waiting.get(jobId);
    if (resolve) resolve();
  });
  events.on('failed', ({ jobId, failedReason }) => console.error(`job ${jobId} failed: ${failedReason}`));
  const finished = (id) =>
    done.has(id) ? Promise.resolve() : new Promise((resolve) => waiting.set(id, resolve));

  const children = await Promise.all(Array.from({ length: args.workers }, () => startWorker(args)));
  const deadline = setTimeout(() => {
    console.error(`not every workflow ended within ${args.timeoutS} s`);
    for (const c of children) c.kill('SIGKILL');
    process.exit(1);
  }, args.timeoutS * 1000);

  // Warm-up: one workflow to completion before the clock starts.
  // Workflow ids carry a tag of this run: a job id already in Redis would be ignored by add.
  const tag = Math.random().toString(36).slice(2, 8);
  await submit(args.shape, queue, flows, `${tag}-warm`);
  await finished(lastJobId(args.shape, `${tag}-warm`));

  const infoBefore = await info(client);
  const start = Date.now();
  const ends = [];
  for (let i = 0; i < args.workflows; i++) {
    const wf = `${tag}-w${i}`;
    ends.push(finished(lastJobId(args.shape, wf)));
    await submit(args.shape, queue, flows, wf);
  }
  const submitMs = Date.now() - start;
  await Promise.all(ends);
  const observedMs = Date.now() - start;
  const infoAfter = await info(client);
  clearTimeout(deadline);

  // Figures from the last jobs.
  const latencies = [];
  let lastFinished = start;
  for (let i = 0; i < args.workflows; i++) {
    const job = await Job.fromId(queue, lastJobId(args.shape, `${tag}-w${i}`));
    lastFinished = Math.max(lastFinished, job.finishedOn);
    latencies.push(job.finishedOn - job.data.created);
  }
  latencies.sort((a, b) => a - b);
  const counts = await queue.getJobCounts('completed', 'failed', 'active', 'wait', 'waiting-children');
  const tasks = args.workflows * TASKS_PER_WORKFLOW;
  const runMs = Math.max(lastFinished - start, 1);

  await Promise.all(
    children.map(
      (c) =>
        new Promise((resolve) => {
          c.on('exit', resolve);
          c.kill('SIGTERM');
        }),
    ),
  );
  await Promise.all([events.close(), flows.close(), queue.close(), client.quit()]);

  const version = JSON.parse(
    readFileSync(new URL('./node_modules/bullmq/package.json', import.meta.url), 'utf8'),
  ).version;
  const report = {
    system: 'bullmq',
    bullmq_version: version,
    node_version: process.version,
    shape: args.shape,
    workflows: args.workflows,
    tasks,
    workers: args.workers,
    concurrency: args.concurrency,
    work: args.simUrl ? 'http' : 'noop',
    tasks_per_s: tasks / (runMs / 1000),
    run_ms: runMs,
    observed_ms: observedMs,
    submit_ms: submitMs,
    latency_ms: {
      p50: percentile(latencies, 50),
      p90: percentile(latencies, 90),
      p99: percentile(latencies, 99),
      max: latencies[latencies.length - 1],
    },
    // Including the warm-up workflow's jobs.
    jobs: counts,
    redis_info_before: infoBefore,
    redis_info_after: infoAfter,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

const args = parseArgs(process.argv.slice(2));
(args.worker ? runWorker(args) : runDriver(args)).catch((err) => {
  console.error(err?.stack ?? String(err));
  for (const c of workerProcesses) c.kill('SIGKILL');
  process.exit(1);
});
