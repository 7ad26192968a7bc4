// What a training process that stays for the next trial of its sweep keeps in memory (workers/training-processes.ts):
// the loaded datasets and verified cached features its last job read, by what identifies them. A value the next
// job asks for again is handed over as it is (nothing in the engine writes into a loaded dataset or a feature
// set); what the next job does not ask for is dropped when it ends, so at most one job's worth is held.
// A process that runs one job and exits keeps nothing (the values would only outlive their use in the job).

export class KeptForNextJob {
  private previous = new Map<string, Promise<unknown>>()
  private current = new Map<string, Promise<unknown>>()
  private enabled = false
  /** values this job got from the previous one and has not said yet, for its events */
  private reused: string[] = []

  /** A new job starts; `keep`: the process may stay for another job, so what it loads is kept. */
  startJob(keep: boolean): void {
    this.enabled = keep
    this.reused = []
    if (!keep) this.previous.clear()
  }

  /** Labels of the values taken from the previous job since the last call. */
  takeReused(): string[] {
    return this.reused.splice(0)
  }

  /** The job ended: what it used is what the next job may reuse. */
  endJob(): void {
    this.previous = this.enabled ? this.current : new Map()
    this.current = new Map()
  }

  /** `load()`, or the value the previous job loaded under `key` (a failed load is never kept). */
  get<T>(key: string, load: () => Promise<T>, label = key): Promise<T> {
    if (!this.enabled) return load()
    let value = this.current.get(key) ?? this.previous.get(key)
    if (value && !this.current.has(key)) this.reused.push(label)
    if (!value) {
      value = load()
      value.catch(() => this.current.delete(key))
    }
    this.current.set(key, value)
    return value as Promise<T>
  }
}

/** The training process's one instance. */
export const keptForNextJob = new KeptForNextJob()
