import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import type { Resolver } from '../../modules/webhooks/safe-delivery.js'
import {
  createWebhook,
  deleteWebhook,
  listDeliveries,
  listWebhooks,
  WEBHOOK_EVENTS,
  webhookRules,
} from '../../modules/webhooks/webhooks-service.js'
import { errorResponses, IdParams, ListQuery, listOf, Nullable, StringEnum } from '../../schemas/common.js'
import { deletedExample, exampleOf, jsonResponse, listExample } from '../../schemas/examples.js'
import { DeletedObject } from '../../schemas/objects.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** resolves webhook hosts when they are registered */
    webhookResolver: Resolver
  }
}

const Unix = Type.Integer({ description: 'Unix seconds' })
const Events = Type.Array(StringEnum([...WEBHOOK_EVENTS]), {
  minItems: 1,
  uniqueItems: true,
  description: 'Job statuses that trigger a delivery (default: all three).',
})

const webhookFields = {
  id: Type.String({ examples: ['wh-7c1m4x0q2w9e8r5t3y6u1i0o'] }),
  object: Type.Literal('webhook'),
  url: Type.String(),
  events: Events,
  created_at: Unix,
}

/** A webhook as lists show it: never the secret. */
export const WebhookObject = Type.Object(webhookFields, {
  examples: [
    {
      id: 'wh-7c1m4x0q2w9e8r5t3y6u1i0o',
      object: 'webhook',
      url: 'https://example.com/refit-hook',
      events: ['succeeded', 'failed', 'cancelled'],
      created_at: 1764370000,
    },
  ],
})

export const CreatedWebhookObject = Type.Object(
  {
    ...webhookFields,
    secret: Type.String({
      description: 'Signing secret for `refit-signature`; shown only in this response.',
      examples: ['whsec_Xq3…'],
    }),
  },
  {
    examples: [
      {
        id: 'wh-7c1m4x0q2w9e8r5t3y6u1i0o',
        object: 'webhook',
        url: 'https://example.com/refit-hook',
        events: ['succeeded', 'failed'],
        secret: 'whsec_2bVt0Qx9mK4sLr7nYp1cWd8eHf3gJa6uZo5iTk0yE2w',
        created_at: 1764370000,
      },
    ],
  },
)

export const DeliveryObject = Type.Object(
  {
    id: Type.String({ description: 'Also the event id (`id` of the payload, `refit-webhook-id` header).' }),
    object: Type.Literal('webhook.delivery'),
    webhook_id: Type.String(),
    job_id: Type.String(),
    event: StringEnum([...WEBHOOK_EVENTS]),
    status: StringEnum(['pending', 'delivered', 'failed'], {
      description: 'pending (being sent or waiting for a retry), delivered (a 2xx answer), failed (gave up)',
    }),
    attempts: Type.Integer(),
    response_status: Nullable(Type.Integer({ description: 'HTTP status of the last attempt' })),
    last_error: Nullable(
      Type.String({ description: "What the last failed attempt hit, in one line; never the receiver's body" }),
    ),
    error_class: Nullable(
      StringEnum(
        [
          'http_status',
          'redirect',
          'timeout',
          'forbidden_address',
          'dns_error',
          'connection_refused',
          'connection_reset',
          'tls_error',
          'invalid_url',
          'cancelled',
          'network_error',
          'webhook_deleted',
        ],
        { description: 'Why the last failed attempt failed (kept after a later success); null if none failed' },
      ),
    ),
    duration_ms: Nullable(Type.Integer({ description: 'How long the last attempt took, in ms' })),
    created_at: Unix,
    delivered_at: Nullable(Unix),
    next_attempt_at: Nullable(Unix),
  },
  {
    examples: [
      {
        id: 'whdel-0p9o8i7u6y5t4r3e2w1q0a1s',
        object: 'webhook.delivery',
        webhook_id: 'wh-7c1m4x0q2w9e8r5t3y6u1i0o',
        job_id: 'ftjob-4f2k8d0s9a7q1w3e5r6t8y0u',
        event: 'succeeded',
        status: 'delivered',
        attempts: 3,
        response_status: 200,
        last_error: null,
        error_class: null,
        duration_ms: 182,
        created_at: 1764370100,
        delivered_at: 1764370104,
        next_attempt_at: null,
      },
    ],
  },
)

export const CreateWebhookBody = Type.Object(
  {
    url: Type.String({
      minLength: 1,
      maxLength: 2048,
      description:
        'Where deliveries are POSTed: http or https, no credentials in the URL, a host that is and resolves to public addresses only.',
    }),
    events: Type.Optional(Events),
  },
  {
    additionalProperties: false,
    examples: [{ url: 'https://example.com/refit-hook', events: ['succeeded', 'failed'] }],
  },
)

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/v1/webhooks',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['webhooks'],
        operationId: 'createWebhook',
        summary: 'Create a webhook for job terminal states; the signing secret is shown only in this answer',
        description:
          'Each delivery is a POST of `{"id", "object": "event", "type": "fine_tuning.job.<status>", "created_at", "data": <the job>}` with `refit-webhook-id` and `refit-signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. A non-2xx answer is retried after 1, 2, 4, 8 and 16 s (6 attempts), then the delivery is `failed`.',
        body: CreateWebhookBody,
        response: { 201: CreatedWebhookObject, ...errorResponses(400, 403) },
      },
    },
    async (req, reply) =>
      reply.status(201).send(await createWebhook(app.db, req.projectId, req.body, webhookRules(app))),
  )

  app.get(
    '/v1/webhooks',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['webhooks'],
        operationId: 'listWebhooks',
        summary: "List the project's webhooks, newest first (without secrets)",
        querystring: ListQuery,
        response: {
          200: jsonResponse(listOf(WebhookObject), listExample(exampleOf(WebhookObject))),
          ...errorResponses(400),
        },
      },
    },
    async (req) => listWebhooks(app.db, req.projectId, req.query),
  )

  app.delete(
    '/v1/webhooks/:id',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['webhooks'],
        operationId: 'deleteWebhook',
        summary: 'Delete a webhook; its pending deliveries are given up',
        params: IdParams,
        response: {
          200: jsonResponse(DeletedObject, deletedExample('wh-7c1m4x0q2w9e8r5t3y6u1i0o', 'webhook')),
          ...errorResponses(404),
        },
      },
    },
    async (req) => deleteWebhook(app.db, req.projectId, req.params.id),
  )

  app.get(
    '/v1/webhooks/:id/deliveries',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['webhooks'],
        operationId: 'listWebhookDeliveries',
        summary: "A webhook's delivery log, newest first: status, attempts, last response status and error",
        params: IdParams,
        querystring: ListQuery,
        response: {
          200: jsonResponse(listOf(DeliveryObject), listExample(exampleOf(DeliveryObject))),
          ...errorResponses(400, 404),
        },
      },
    },
    async (req) => listDeliveries(app.db, req.projectId, req.params.id, req.query),
  )
}

export default routes
