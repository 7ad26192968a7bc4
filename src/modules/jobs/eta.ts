// The estimated finish of a running job, from the pace of training itself. Measuring from the job's start
// counted set-up (loading data, computing cached features, building the model) against the first percent of
// progress, so the first estimate was many times too long. The pace is measured from the first progress
// report of the attempt (resumed attempts start at their own fraction) and smoothed with an exponential
// moving average over a time constant, so one slow batch or a validation pass does not swing it.

/** Seconds of training before the first estimate: earlier paces are mostly noise. */
const WARM_UP_S = 2
/** Time constant of the smoothing, in seconds. */
const TAU_S = 10

/** Estimates the finish of one training attempt from its progress reports (fraction 0..1). */
export class EtaEstimator {
  private anchor: { t: number; f: number } | null = null
  private last: { t: number; f: number } | null = null
  private rate: number | null = null

  /** Records a report at `nowMs` and returns the estimated finish in Unix seconds, or null while unknown. */
  update(nowMs: number, fraction: number): number | null {
    const t = nowMs / 1000
    if (!this.anchor || !this.last || fraction < this.last.f) {
      // first report, or progress went back (a new attempt resumed earlier): measure afresh
      this.anchor = { t, f: fraction }
      this.last = { t, f: fraction }
      this.rate = null
      return null
    }
    const dt = t - this.last.t
    if (dt > 0) {
      if (this.rate === null) {
        if (t - this.anchor.t >= WARM_UP_S && fraction > this.anchor.f)
          this.rate = (fraction - this.anchor.f) / (t - this.anchor.t)
      } else {
        const windowRate = (fraction - this.last.f) / dt
        const a = 1 - Math.exp(-dt / TAU_S)
        this.rate = (1 - a) * this.rate + a * windowRate
      }
      this.last = { t, f: fraction }
    }
    if (this.rate === null || this.rate <= 0) return null
    if (fraction >= 1) return Math.round(t)
    return Math.round(t + (1 - fraction) / this.rate)
  }
}
