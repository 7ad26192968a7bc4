// Request and response schemas of a job's event and metric listings, shared by the project and admin routes.
import { Type } from '@fastify/type-provider-typebox'
import { listOf } from './common.js'
import { eventExample, eventStreamExample, jsonResponse, listExample, metricsExample } from './examples.js'
import { EventObject, MetricObject } from './objects.js'

export const JobEventsQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
    after: Type.Optional(Type.String({ maxLength: 200 })),
    stream: Type.Optional(Type.Boolean({ default: false })),
  },
  { additionalProperties: false },
)

export const JobEventsHeaders = Type.Object({
  'last-event-id': Type.Optional(Type.String({ pattern: '^[0-9]{1,19}$' })),
})

export const jobEventsResponse = {
  description: 'A page of events, or (stream=true) an event stream',
  content: {
    'application/json': { schema: listOf(EventObject), example: listExample(eventExample) },
    'text/event-stream': { schema: { type: 'string' }, example: eventStreamExample },
  },
}

export const JobMetricsQuery = Type.Object(
  {
    name: Type.Optional(Type.String({ maxLength: 64, description: 'Only rows of this metric' })),
    limit: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 10_000,
        description: 'Rows per page; without it one page holds up to 10,000 rows (the whole history of most jobs)',
      }),
    ),
    after: Type.Optional(Type.String({ maxLength: 200, description: 'Id of the last row of the previous page.' })),
  },
  { additionalProperties: false },
)

export const jobMetricsResponse = jsonResponse(listOf(MetricObject), metricsExample)
