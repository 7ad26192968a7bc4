#!/bin/sh
# One image, three roles:
#   all     (default) the API and a worker process beside it, like `npm start`
#   api     the API only (REFIT_ROLE=api); workers run in their own containers
#   worker  a worker only: consumes the queue of WORKER_RESOURCE_CLASS (cpu: `training`, gpu: `training-gpu`)
set -e
role="${1:-all}"
case "$role" in
  worker) exec node dist/workers/worker.js ;;
  api) REFIT_ROLE=api exec node dist/src/main.js ;;
  all) REFIT_ROLE=all exec node dist/src/main.js ;;
  *) echo "unknown role '$role': use api, worker or all" >&2; exit 64 ;;
esac
