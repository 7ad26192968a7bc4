import { spawnSync } from 'node:child_process'
// Renders bench/results/*.json as Markdown tables into README.md, between `<!-- bench:start -->` and
// `<!-- bench:end -->` (under "## Figures"). One table per benchmark, headed by the commit and date it
// measured. Results of `--quick` smoke runs are skipped unless --include-quick is given.
//
//   npm run bench:tables            (rewrites README.md)
//   npx tsx scripts/render-bench-tables.ts --stdout [--include-quick]   (prints the section instead)
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { projectRoot } from '../src/lib/paths.js'

const START = '<!-- bench:start -->'
const END = '<!-- bench:end -->'
const resultsDir = path.join(projectRoot, 'bench', 'results')
const readme = path.join(projectRoot, 'README.md')
const includeQuick = process.argv.includes('--include-quick')

type Json = Record<string, any>
type Cell = string | number | boolean | null | undefined

const fmt = (v: Cell): string => {
  if (v === null || v === undefined || (typeof v === 'number' && Number.isNaN(v))) return '–'
  if (typeof v === 'boolean') return v ? 'yes' : 'no'
  if (typeof v === 'number') return Number.isInteger(v) ? v.toLocaleString('en-US') : String(Math.round(v * 1e4) / 1e4)
  return String(v).replace(/\|/g, '\\|')
}

/** Python's figures come with every digit: two decimals are what the tables compare. */
const round2 = (v: number | undefined) => (typeof v === 'number' ? Math.round(v * 100) / 100 : v)

function mdTable(headers: string[], rows: Cell[][]): string {
  return [
    `| ${headers.join(' | ')} |`,
    `| ${headers.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(fmt).join(' | ')} |`),
  ].join('\n')
}

const pct = (x: number | null | undefined) => (typeof x === 'number' ? `${(x * 100).toFixed(2)}%` : '–')
const goal = (met: unknown) => (met === true ? 'met' : met === false ? '**not met**' : '–')

function provenance(r: Json): string {
  const c =
    typeof r.commit === 'string'
      ? `\`${r.commit.slice(0, 12)}${r.commit.endsWith('-dirty') ? '-dirty' : ''}\``
      : 'not recorded'
  const m = r.machine
    ? typeof r.machine === 'string'
      ? r.machine
      : `${r.machine.cpus} × ${r.machine.model}`
    : r.cpus || r.cores
      ? `${r.cpus ?? r.cores} cores${r.cpu_model ? ` × ${r.cpu_model}` : ''}`
      : null
  return [
    `commit ${c}`,
    `date ${typeof r.date === 'string' ? r.date.slice(0, 10) : 'not recorded'}`,
    r.backend ? `backend ${r.backend}` : null,
    m ? `machine ${m}` : null,
    r.quick ? '**quick smoke run: not representative**' : null,
  ]
    .filter(Boolean)
    .join(' · ')
}

/** Each known benchmark: its title and body. Unknown files fall back to their scalar fields. */
const renderers: Record<string, { title: string; body: (r: Json) => string }> = {
  'mnist-transfer': {
    title: 'Transfer, Keras mnist_transfer_cnn protocol (`bench/mnist-transfer.ts`)',
    body: (r) =>
      `${mdTable(
        ['seed', 'test accuracy (5-9)', 'wall s', 'head samples/s', 'backend'],
        (r.runs ?? []).map((x: Json) => [x.seed, pct(x.test_accuracy), x.wall_s, x.head_samples_per_second, x.backend]),
      )}\n\n${r.protocol?.train_samples ?? '?'} training images of digits 5-9, ${r.protocol?.n_epochs} epochs, batch ${r.protocol?.batch_size}; scored with stock tfjs-node on the official test split. Published (Keras): ${pct(r.published_accuracy)}; goal ≥ 99% on every seed: ${goal(r.goal_met)}.`,
  },
  'distillation-mnist': {
    title: 'Knowledge distillation on MNIST, Hinton et al. 2015 scaled down (`bench/distillation-mnist.ts`)',
    body: (r) =>
      `${mdTable(
        ['setting', 'seed', 'T', 'alpha', 'val accuracy', 'test errors'],
        [
          [`teacher ${r.teacher?.architecture ?? ''}`, 1, null, null, r.teacher?.val_accuracy, r.teacher?.test_errors],
          ...(r.results ?? []).map((x: Json) => [
            x.setting,
            x.seed,
            x.temperature,
            x.alpha,
            x.val_accuracy,
            x.test_errors,
          ]),
        ],
      )}\n\nStudent \`${r.student?.architecture}\`, ${r.student?.epochs} epochs on ${fmt(r.train_samples)} training images (10% held out for validation); test errors on ${fmt(r.test_samples)} test images via the evaluations API. Alpha chosen per T on the validation split with seed 1 only and reused for seed 2. Published: 146 errors supervised vs 74 distilled. Goal (a distilled student beats the supervised one on every seed): ${goal(r.goal_met)}. Total ${fmt(r.seconds)} s.`,
  },
  'distillation-mnist-engine': {
    title: 'Knowledge distillation on MNIST, engine direct (`bench/distillation-mnist-engine.ts`)',
    body: (r) =>
      mdTable(
        ['student', 'seed', 'T', 'alpha', 'test error'],
        (r.results ?? []).map((x: Json) => [x.student, x.seed, x.temperature, x.alpha, pct(x.test_error)]),
      ),
  },
  'peer-keras': {
    title: 'Refit beside Keras on the same libtensorflow (`bench/peer-keras.ts`)',
    body: (r) => {
      const rows: Cell[][] = []
      const m = r.mobilenet
      if (m) {
        rows.push([
          'MobileNetV2 forward to features, batch 32',
          'ms / image',
          m.refit?.graph?.ms_per_image,
          m.refit?.eager?.ms_per_image,
          round2(m.keras?.tf_function_ms_per_image),
          round2(m.keras?.eager_ms_per_image),
        ])
      }
      const c = r.cnn_small
      if (c)
        rows.push([
          'cnn-small training, batch 128, epochs 2-3',
          'samples / s',
          c.refit?.samples_per_second,
          null,
          c.keras?.samples_per_second && Math.round(c.keras.samples_per_second),
          null,
        ])
      const t = r.mnist_transfer
      if (t)
        rows.push([
          'mnist_transfer_cnn protocol end to end',
          'wall s',
          t.refit?.wall_s,
          null,
          round2(t.keras?.wall_s),
          null,
        ])
      const load = r.load_average
        ? ` Load average (1, 5, 15 min) before ${r.load_average.before?.join(', ')}, after ${r.load_average.after?.join(', ')}: the machine was shared, ratios matter more than absolute figures.`
        : ''
      const e = r.export as Record<string, Json> | undefined
      const exportTable = e
        ? `\n\nTransfer from each built-in and from an uploaded TF.js graph model (nsfwjs's \`mobilenet_v2_mid\`) on the same PNG digits 5-9 through the service, then its \`?format=saved_model\` export loaded by Python \`tf.saved_model.load\` and called through \`serving_default\` on 32 held-out images, against the eager TF.js model (for the graph base: its default download, a graph-model zip, run by stock \`tf.loadGraphModel\`) (goal: max diff ≤ 1e-4 × max(1, max|eager|)):\n\n${mdTable(
            [
              'base',
              'train PNGs',
              'features ms / image (path)',
              'test accuracy (held-out PNGs)',
              'export s',
              'SavedModel vs eager TF.js, max diff',
              'argmax agree',
            ],
            Object.entries(e).map(([base, x]) => [
              base === 'graph-model' ? 'graph model (mobilenet_v2_mid)' : base,
              x.train_images,
              `${fmt(x.features_ms_per_image)} (${x.features_path})`,
              `${fmt(x.test_accuracy)} (${fmt(x.test_images)})`,
              typeof x.export_ms === 'number' ? (x.export_ms / 1000).toFixed(1) : '–',
              `${Number(x.saved_model_check?.max_diff).toExponential(1)} (${x.saved_model_check?.ok ? 'ok' : '**over**'})`,
              `${fmt(x.saved_model_check?.argmax_agree)} / ${fmt(x.saved_model_check?.rows)}`,
            ]),
          )}`
        : ''
      return `${mdTable(['figure', 'unit', 'Refit (graph path / default)', 'Refit eager (REFIT_FROZEN_GRAPH=off)', 'Keras tf.function / compiled fit', 'Keras eager'], rows)}\n\nKeras ${m?.keras?.threads?.keras ?? '?'} on TensorFlow ${m?.keras?.threads?.tensorflow ?? '?'}, default thread pools on both sides (intra/inter op 0 = one per core). MobileNetV2 graph path / Keras tf.function: ${m?.ratio_graph_vs_tf_function ?? '–'} (goal ≤ 1.25); cnn-small Refit / Keras samples/s: ${c?.ratio_refit_vs_keras ?? '–'} (goal ≥ 0.8); mnist_transfer_cnn Refit / Keras wall time: ${t?.ratio_refit_vs_keras ?? '–'} (goal ≤ 1).${load}${exportTable}`
    },
  },
  'mobilenet-transfer': {
    title: 'MobileNetV2 transfer on PNG folders (`bench/mobilenet-transfer.ts`)',
    body: (r) =>
      mdTable(
        ['train / test images', 'epochs', 'test accuracy', 'wall s', 'features: images, ms', 'ms / image', 'backend'],
        [
          [
            `${fmt(r.train_images)} / ${fmt(r.test_images)}`,
            r.epochs,
            pct(r.test_accuracy),
            r.wall_s,
            `${fmt(r.feature_samples)}, ${fmt(r.feature_ms)}`,
            r.feature_ms_per_image,
            r.backend,
          ],
        ],
      ),
  },
  'service-overhead': {
    title: 'Service overhead vs bare TF.js, head training (`bench/service-overhead.ts`)',
    body: (r) =>
      `${mdTable(
        ['side', 'samples/s', 'backend'],
        [
          ['service (job progress)', r.service?.samples_per_second, r.service?.backend],
          [
            'service (epoch-event intervals, incl. validation and checkpoints)',
            r.service?.epoch_interval_samples_per_second,
            r.service?.backend,
          ],
          ['bare tfjs-node `model.fit`', r.bare?.samples_per_second, r.bare?.backend],
        ],
      )}\n\nmnist-cnn, digits 5-9 (${fmt(r.train_samples)} images), ${r.n_epochs} epochs, batch ${r.batch_size}. Ratio service/bare ${fmt(r.ratio)} (with validation and checkpoints: ${fmt(r.ratio_with_validation_and_checkpoints)}); goal ≥ 0.95: ${goal(r.goal_met)}.`,
  },
  'feature-caching': {
    title: 'Feature caching vs fitting through the frozen backbone (`bench/feature-caching.ts`)',
    body: (r) =>
      `${mdTable(
        ['side', 'epochs', 'seconds'],
        [
          ['service, cached features (job running time)', r.epochs, r.service?.running_s],
          [
            `bare \`model.fit\`, frozen MobileNetV2${r.bare?.extrapolated ? ` (${r.bare.epochs_run} epochs run, extrapolated)` : ''}`,
            r.epochs,
            r.bare?.fit_s_20_epochs,
          ],
        ],
      )}\n\n${fmt(r.images)} images. Speed-up ${fmt(r.speedup)}x; goal ≥ 10x: ${goal(r.goal_met)}.`,
  },
  'feature-cache-jobs': {
    title: 'Feature cache across jobs: the same transfer job twice (`bench/feature-cache-jobs.ts`)',
    body: (r) =>
      `${mdTable(
        ['job', 'wall s', 'features', 'val accuracy', 'load average before'],
        (r.sides ?? []).map((s: Json) => [s.side, s.wall_s, s.features, s.val_accuracy, s.load_before?.join(' ')]),
      )}\n\nmobilenet-v2, ${fmt(r.images)} PNG images, ${r.epochs} epochs, batch ${r.batch_size}. Second / first wall time ${fmt(r.ratio)}; goal ≤ 0.3: ${goal(r.goal_met)}.`,
  },
  sweep: {
    title: 'Hyperparameter sweep vs one lone job (`bench/sweep.ts`)',
    body: (r) =>
      `${mdTable(
        [
          'case',
          'lone job s',
          'sweep s',
          'sweep / lone',
          'lone test acc',
          'best trial test acc',
          'feature extractions',
          'from cache',
          'trials',
          'load avg before (lone / sweep)',
        ],
        (r.cases ?? []).map((c: Json) => [
          c.case,
          c.lone?.wall_s,
          c.sweep?.wall_s,
          c.ratio,
          pct(c.lone?.test_accuracy),
          pct(c.sweep?.test_accuracy),
          c.sweep?.feature_extractions,
          c.sweep?.features_from_cache,
          Object.entries(c.sweep?.trials_by_outcome ?? {})
            .map(([k, v]) => `${v} ${k}`)
            .join(', '),
          `${c.lone?.load_before?.[0] ?? '–'} / ${c.sweep?.load_before?.[0] ?? '–'}`,
        ]),
      )}\n\n${(r.cases ?? [])[0]?.trials ?? 16} random trials (learning rate log, head hidden units log-int, dropout), ASHA (min_epochs 1, factor 3), max_parallel 2 on WORKER_CONCURRENCY 2; the lone job has the default hyperparameters and the same n_epochs; both start with a cold feature cache. Wall time = POST → terminal status seen. Goals: sweep / lone ≤ 4, best ≥ lone test accuracy, 1 extraction: ${goal(r.goal_met)}. A random sweep's first trial is the baseline (the lone job's defaults, \`baseline_trial\`; ASHA ranks it but does not stop it)${(
        r.cases ?? []
      )
        .filter((c: Json) => c.sweep?.baseline_val_accuracy != null)
        .map(
          (c: Json) =>
            `; ${c.model}: baseline val_accuracy ${c.sweep.baseline_val_accuracy}, best trial ${c.sweep.best_val_accuracy} (test ${pct(c.sweep.test_accuracy)} vs the lone job's ${pct(c.lone?.test_accuracy)})`,
        )
        .join(
          '',
        )}. Trials of one sweep share a training process on a worker (README, Hyperparameter sweeps): a trial's fixed cost (fork, TensorFlow loaded and self-tested, 92 MB of mnist-cnn features read and verified: ~3 s of a ~4.5 s trial stopped after one epoch) is paid once per worker slot; before that the mnist-cnn sweep took 50 s (7.03x). ASHA is asynchronous with max_parallel > 1: which trials go on past a rung depends on which others have reported by then, so the best trial can differ between runs (it is reproducible with max_parallel 1); with 500 validation samples a best trial 0.01 higher on val_accuracy can still score a few test images fewer than the baseline.`,
  },
  lifecycle: {
    title: 'Job lifecycle (`bench/lifecycle.ts`)',
    body: (r) =>
      mdTable(
        ['figure', 'value'],
        [
          [
            `cancel, request → training process exited (N=${r.cancel?.n}), median / worst`,
            `${fmt(r.cancel?.median_ms)} / ${fmt(r.cancel?.worst_ms)} ms`,
          ],
          ['cancel, request → status `cancelled`, median', `${fmt(r.cancel?.median_to_status_ms)} ms`],
          ['SIGKILL of the owning worker → running again (attempt 2)', `${fmt(r.resume?.to_running_attempt_2_ms)} ms`],
          ['SIGKILL of the owning worker → succeeded', `${fmt(r.resume?.to_succeeded_ms)} ms`],
          ['duplicate metric rows, whole database', r.duplicate_metric_rows],
        ],
      ),
  },
  'engine-speed': {
    title: 'Engine training throughput, no API (`bench/engine-speed.ts`)',
    body: (r) =>
      mdTable(
        ['backend', 'method', 'samples/s (steady)', 'end to end s', 'val accuracy'],
        (r.figures ?? []).map((x: Json) => [
          x.backend,
          x.method,
          x.steady_samples_per_second,
          x.end_to_end_seconds,
          x.validation_accuracy,
        ]),
      ),
  },
  'engine-eager': {
    title: 'Eager layers before/after, no API (`bench/engine-eager.ts`, src/engine/fast-layers.ts)',
    body: (r) => {
      const m = r.mobilenet_v2 ?? {}
      const h = r.head_logits ?? {}
      const c = r.cnn_small_step ?? {}
      const pct = (b: number, a: number) => (b && a ? `${Math.round((100 * (a - b)) / b)}%` : '–')
      return `${mdTable(
        ['figure', 'before (library layers)', 'after', 'change', 'applied'],
        [
          [
            'MobileNetV2 fine-tuning step, batch 16, ms',
            m.finetune_step_ms_before,
            m.finetune_step_ms_after,
            pct(m.finetune_step_ms_before, m.finetune_step_ms_after),
            'yes (tensorflow backend)',
          ],
          [
            'MobileNetV2 eager forward, batch 32, ms/image',
            m.eager_forward_ms_per_image_before,
            m.eager_forward_ms_per_image_after,
            pct(m.eager_forward_ms_per_image_before, m.eager_forward_ms_per_image_after),
            'yes (same layers)',
          ],
          [
            'head logits step, matMul + add vs fused matMul, ms',
            h.logits_step_ms_before,
            h.logits_step_ms_after,
            pct(h.logits_step_ms_before, h.logits_step_ms_after),
            'no (no gain)',
          ],
          ...(c.step_ms_before
            ? [
                [
                  'cnn-small training step, batch 128, ms (Relu gradients: tfjs step() vs ReluGrad)',
                  c.step_ms_before,
                  c.step_ms_after,
                  pct(c.step_ms_before, c.step_ms_after),
                  'yes (tensorflow backend)',
                ],
              ]
            : []),
        ],
      )}\n\nAfter: inference-mode BatchNormalization as x * s + o, ReLU(6) as relu6, Relu/Relu6 gradients through TensorFlow's ReluGrad/Relu6Grad. One run; load average ${r.load_average?.before?.join(' ') ?? '?'} before, ${r.load_average?.after?.join(' ') ?? '?'} after (2 cores shared with other work)${c.load_average ? `; the cnn-small row: its own run (${c.date?.slice(0, 10)}, 8 interleaved rounds, load ${c.load_average.before?.join(' ')})` : ''}.`
    },
  },
  inference: {
    title: 'Inference through the API (`bench/inference.ts`)',
    body: (r) =>
      mdTable(
        [
          'model',
          'batch',
          'condition',
          'predictions/s',
          'p50 ms',
          'p99 ms',
          'inference process p50 ms (Server-Timing forward)',
          'API → process round trip p50 ms (pool)',
          'backend / path',
        ],
        (r.rows ?? []).map((x: Json) => [
          x.model,
          x.batch,
          x.condition,
          x.predictions_per_second,
          x.p50_ms,
          x.p99_ms,
          x.forward_p50_ms,
          x.pool_p50_ms,
          x.forward ? `${x.backend} / ${x.forward}` : x.backend,
        ]),
      ),
  },
  abuse: {
    title: 'Abuse: what each attack gets, and what it costs the others (`bench/abuse.ts`)',
    body: (r) =>
      `${mdTable(
        ['attack', 'answer', 'API peak RSS MiB', 'worker peak RSS MiB', '/healthz p99 ms', '/healthz failures'],
        (r.rows ?? []).map((x: Json) => [
          x.attack,
          x.answer,
          x.api_peak_rss_mib,
          x.worker_peak_rss_mib,
          x.healthz_p99_ms,
          x.healthz_failures,
        ]),
      )}\n\nOne API process and one worker on the 2 cores; /healthz polled throughout each attack.`,
  },
  memory: {
    title: 'Memory estimator vs measured peak RSS (`bench/memory.ts`)',
    body: (r) =>
      `${mdTable(
        ['case', 'estimate MiB', 'measured MiB', 'ratio'],
        (r.cases ?? []).map((x: Json) => [
          x.case,
          Math.round(x.estimate_bytes / 2 ** 20),
          Math.round(x.measured_peak_rss_bytes / 2 ** 20),
          x.ratio,
        ]),
      )}\n\nGoal: ${r.goal ?? 'within 2x'}: ${goal(r.met)} (ratios ${fmt(r.min_ratio)}–${fmt(r.max_ratio)}${r.load_average ? `, load average ${fmt(Array.isArray(r.load_average) ? r.load_average[0] : r.load_average)}` : ''}).`,
  },
  load: {
    title: 'API load (`bench/load.ts`)',
    body: (r) =>
      mdTable(
        ['scenario', 'mode', 'target/s', 'req/s', '2xx/s', 'p50 ms', 'p99 ms', 'statuses', 'recovery ms'],
        (r.results ?? []).map((x: Json) => [
          x.scenario,
          x.mode,
          x.target_rps,
          x.rps,
          x.ok_rps,
          x.p50_ms,
          x.p99_ms,
          Object.entries(x.status ?? {})
            .map(([c, n]) => `${c}: ${n}`)
            .join(', '),
          x.recovery_ms,
        ]),
      ),
  },
}

const ORDER = Object.keys(renderers)

function fallback(r: Json): string {
  const scalars = Object.entries(r).filter(
    ([k, v]) =>
      !['name', 'commit', 'date', 'machine', 'job_ids', 'quick'].includes(k) && (v === null || typeof v !== 'object'),
  )
  return mdTable(
    ['figure', 'value'],
    scalars.map(([k, v]) => [k, v as Cell]),
  )
}

export function renderSection(): string {
  const files = readdirSync(resultsDir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => ({
      name: f.replace(/\.json$/, ''),
      data: JSON.parse(readFileSync(path.join(resultsDir, f), 'utf8')) as Json,
    }))
    .filter((f) => {
      if (f.data.quick && !includeQuick) {
        console.error(`skipping ${f.name}.json: a --quick smoke run`)
        return false
      }
      return true
    })
    .sort((a, b) => {
      const ia = ORDER.indexOf(a.name)
      const ib = ORDER.indexOf(b.name)
      return (ia < 0 ? ORDER.length : ia) - (ib < 0 ? ORDER.length : ib) || a.name.localeCompare(b.name)
    })
  const parts = [
    START,
    '<!-- generated by `npm run bench:tables` from bench/results/*.json: edit those (or the script), not this -->',
  ]
  for (const f of files) {
    const r = renderers[f.name]
    parts.push(`\n#### ${r?.title ?? f.name}\n\n${provenance(f.data)}\n\n${r ? r.body(f.data) : fallback(f.data)}`)
  }
  parts.push(`\n${END}`)
  return parts.join('\n')
}

function main() {
  const section = renderSection()
  if (process.argv.includes('--stdout')) {
    console.log(section)
    return
  }
  const text = readFileSync(readme, 'utf8')
  const a = text.indexOf(START)
  const b = text.indexOf(END)
  if (a < 0 || b < a) throw new Error(`README.md has no ${START} ... ${END} section (it goes under "## Figures")`)
  writeFileSync(readme, text.slice(0, a) + section + text.slice(b + END.length))
  // The repository's formatter aligns markdown tables; run it so `npm run lint` stays clean.
  spawnSync(
    process.execPath,
    [path.join(projectRoot, 'node_modules/@biomejs/biome/bin/biome'), 'format', '--write', readme],
    {
      stdio: 'ignore',
    },
  )
  console.log('README.md: benchmark tables updated')
}

main()
