// The typed Refit client: openapi-fetch over the paths of openapi/schema.d.ts (generated from
// openapi/openapi.json by `npm run openapi`). Every call is typed by path, method, parameters and body:
//
//   const refit = createRefitClient({ baseUrl: 'http://127.0.0.1:8080', apiKey })
//   const { data, error } = await refit.GET('/v1/fine_tuning/jobs/{id}', { params: { path: { id } } })
//
// Calls resolve to `{ data, error, response }`: `error` is the API's error envelope on a 4xx/5xx.
import createClient, { type Client, type ClientOptions } from 'openapi-fetch'
import type { components, paths } from './schema.js'

export type { components, operations, paths } from './schema.js'

/** The API's object schemas by component name (`Schemas['FineTuningJob']`, `Schemas['Error']`, …). */
export type Schemas = components['schemas']

/** A client bound to one Refit server and one credential. */
export type RefitClient = Client<paths>

/** Where the server is and which credential to send. */
export interface RefitClientOptions extends Omit<ClientOptions, 'baseUrl'> {
  /** Server root without `/v1`, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string
  /** A project API key (`rk-…`), or the admin token for `/v1/admin` routes. */
  apiKey?: string
}

/** Creates a typed client; the key is sent as `Authorization: Bearer <apiKey>` on every call. */
export function createRefitClient({ baseUrl, apiKey, headers, ...options }: RefitClientOptions): RefitClient {
  return createClient<paths>({
    ...options,
    baseUrl: baseUrl.replace(/\/+$/, ''),
    headers: { ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}), ...(headers as Record<string, string>) },
  })
}

/**
 * The `bodySerializer` of multipart routes (`POST /v1/files`, `POST /v1/models`): fields first, then the
 * file parts, as the server streams them. Pass files as `File` (`new File([bytes], 'digits.zip')`) to name them.
 */
export function multipartBody(body: object): FormData {
  const form = new FormData()
  const entries = Object.entries(body).filter(([, v]) => v !== undefined && v !== null)
  for (const [k, v] of entries) if (!(v instanceof Blob)) form.append(k, typeof v === 'string' ? v : JSON.stringify(v))
  for (const [k, v] of entries) if (v instanceof Blob) form.append(k, v)
  return form
}

/** Refit's body for `POST /v1/fine_tuning/jobs`, with its own methods (`transfer`, `distillation`). */
export type RefitJobCreateBody = paths['/v1/fine_tuning/jobs']['post']['requestBody'] extends
  | { content: { 'application/json': infer B } }
  | undefined
  ? B
  : never

/**
 * Sends a Refit job body through an OpenAI SDK without `as any`: the body is checked against Refit's schema
 * and handed to the SDK as its own parameter type, inferred from where it is passed:
 * `openai.fineTuning.jobs.create(refitJobBody({ model, training_file, method: { type: 'transfer' } }))`.
 */
export function refitJobBody<SdkParams = RefitJobCreateBody>(body: RefitJobCreateBody): SdkParams {
  return body as unknown as SdkParams
}

/**
 * Reads a job an OpenAI SDK returned with Refit's types, so `status` includes `cancelling` and
 * `method.type` includes `transfer` and `distillation`: `refitJob(await openai.fineTuning.jobs.retrieve(id)).status`.
 */
export function refitJob(job: { id: string; object: 'fine_tuning.job' }): Schemas['FineTuningJob'] {
  return job as unknown as Schemas['FineTuningJob']
}
