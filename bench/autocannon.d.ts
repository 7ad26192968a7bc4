// The part of autocannon's API bench/load.ts uses (the package ships no types; @types/autocannon is not installed).
declare module 'autocannon' {
  namespace autocannon {
    interface RequestSpec {
      method?: string
      path?: string
      headers?: Record<string, string>
      body?: string
      setupRequest?: (req: RequestSpec, context: Record<string, unknown>) => RequestSpec
    }
    interface Options {
      url: string
      connections?: number
      duration?: number
      overallRate?: number
      timeout?: number
      method?: string
      headers?: Record<string, string>
      body?: string
      requests?: RequestSpec[]
    }
    interface Histogram {
      average: number
      total: number
      p50: number
      p99: number
    }
    interface Result {
      requests: Histogram
      latency: Histogram
      statusCodeStats?: Record<string, { count: number }>
      errors: number
      timeouts: number
    }
  }
  function autocannon(opts: autocannon.Options): Promise<autocannon.Result>
  export default autocannon
}
