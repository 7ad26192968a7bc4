"""The official `openai` Python SDK pointed at Refit, as an OpenAI user's script would call it: only the base URL
and key change; no extra_body, no header workaround anywhere. Run by test/clients/openai-python.test.ts with the
SDK version under test; prints one JSON line per call ({"call", "ok", "detail"}) and exits non-zero on the first
failure (its traceback on stderr).

Environment: REFIT_BASE_URL (…/v1), REFIT_API_KEY, REFIT_LIMITED_KEY (a project with max_concurrent_jobs=1),
DIGITS_ZIP (an IDX zip of digits 5-9), TAG (names this run's suffix and metadata).
"""

import json
import logging
import os
import sys
import time

import openai
from openai import OpenAI

BASE = os.environ["REFIT_BASE_URL"]
KEY = os.environ["REFIT_API_KEY"]
LIMITED_KEY = os.environ["REFIT_LIMITED_KEY"]
DIGITS = os.environ["DIGITS_ZIP"]
TAG = os.environ.get("TAG", "py")
TERMINAL = ("succeeded", "failed", "cancelled")

client = OpenAI(base_url=BASE, api_key=KEY)  # the SDK's default retries
strict = OpenAI(base_url=BASE, api_key=KEY, max_retries=0)


class Retries(logging.Handler):
    """Counts the SDK's own retry decisions (it logs them on `openai._base_client`)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.retried = 0
        self.told_not_to = 0

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Retrying request"):
            self.retried += 1
        if "x-should-retry" in msg and "Not retrying" in msg:
            self.told_not_to += 1


retries = Retries()
sdk_log = logging.getLogger("openai")
sdk_log.setLevel(logging.DEBUG)
sdk_log.addHandler(retries)
sdk_log.propagate = False


def report(call, detail=""):
    print(json.dumps({"call": call, "ok": True, "detail": str(detail)}), flush=True)


def wait_terminal(job_id, timeout=180):
    end = time.time() + timeout
    while time.time() < end:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in TERMINAL:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def expect_error(cls, fn, code=None):
    try:
        fn()
    except cls as err:
        if code is not None:
            assert err.code == code, (err.code, code, err)
        return err
    raise AssertionError(f"expected {cls.__name__}")


# Models
ids = [m.id for m in client.models.list()]
assert "mnist-cnn" in ids and "mlp-small" in ids, ids
report("models.list", f"{len(ids)} models")
assert client.models.retrieve("mnist-cnn").owned_by == "refit"
report("models.retrieve")

# Files
with open(DIGITS, "rb") as f:
    digits = f.read()
with open(DIGITS, "rb") as f:
    up = client.files.create(file=f, purpose="fine-tune", expires_after={"anchor": "created_at", "seconds": 86400})
assert up.object == "file" and up.status == "uploaded", up
assert up.expires_at == up.created_at + 86400, (up.expires_at, up.created_at)
report("files.create", f"expires_at = created_at + {up.expires_at - up.created_at}")
done = client.files.wait_for_processing(up.id, poll_interval=0.2)
assert done.status == "processed", done
report("files.wait_for_processing", done.status)
assert client.files.retrieve(up.id).filename.endswith(".zip")
report("files.retrieve")
spare = client.files.create(file=("spare.zip", digits, "application/zip"), purpose="fine-tune")
client.files.wait_for_processing(spare.id, poll_interval=0.2)
newest = [f.id for f in client.files.list(limit=1)]
assert newest[:2] == [spare.id, up.id], newest
report("files.list(limit=1) auto-pagination", f"{len(newest)} files")
oldest = [f.id for f in client.files.list(limit=1, order="asc", purpose="fine-tune")]
assert oldest.index(up.id) < oldest.index(spare.id), oldest
report("files.list(order='asc', purpose='fine-tune')")
assert client.files.content(up.id).read() == digits
report("files.content", f"{len(digits)} bytes")
deleted = client.files.delete(spare.id)
assert deleted.deleted and deleted.id == spare.id, deleted
expect_error(openai.NotFoundError, lambda: strict.files.retrieve(spare.id))
report("files.delete")
chat = client.files.create(
    file=("chat.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n', "application/jsonl"),
    purpose="fine-tune",
)
chat = client.files.wait_for_processing(chat.id, poll_interval=0.2)
assert chat.status == "error" and "classifiers" in chat.status_details, chat
assert chat.model_extra["error"]["code"] == "chat_format_not_supported", chat.model_extra
report("files.create chat-format JSONL", "chat_format_not_supported")

# Jobs: the legacy form (top-level hyperparameters, no method) on a pretrained model transfers.
legacy = client.fine_tuning.jobs.create(
    model="mnist-cnn",
    training_file=up.id,
    hyperparameters={"n_epochs": 2, "batch_size": 64},
    seed=11,
    suffix=TAG,
    metadata={"run": TAG},
)
assert legacy.method.type == "transfer", legacy.method
report("jobs.create legacy hyperparameters", legacy.id)
# Explicit nulls for every nullable parameter, and OpenAI's relative learning rate.
nulls = client.fine_tuning.jobs.create(
    model="mlp-small",
    training_file=up.id,
    validation_file=None,
    suffix=None,
    seed=None,
    metadata=None,
    integrations=None,
    method={
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 32, "learning_rate_multiplier": 2}},
    },
)
hp = nulls.method.supervised.hyperparameters
assert hp.learning_rate_multiplier == 2 and hp.to_dict()["learning_rate"] == 0.002, hp
report("jobs.create method.supervised + nulls + learning_rate_multiplier", nulls.id)
# A Refit method (outside the SDK's Literal types, accepted at runtime as a plain dict).
transfer = client.fine_tuning.jobs.create(
    model="mnist-cnn",
    training_file=up.id,
    method={"type": "transfer", "transfer": {"hyperparameters": {"n_epochs": 1}}},
    integrations=[],
)
assert transfer.method.type == "transfer"
report("jobs.create method.transfer", transfer.id)
# Waiting behind the others: paused at once, out of the queue; resumed to the queue.
paused = client.fine_tuning.jobs.pause(transfer.id)
assert paused.status == "paused", paused.status
report("jobs.pause (queued)", paused.status)
resumed = client.fine_tuning.jobs.resume(transfer.id)
assert resumed.status == "queued", resumed.status
report("jobs.resume", resumed.status)
doomed = client.fine_tuning.jobs.create(model="mnist-cnn", training_file=up.id, hyperparameters={"n_epochs": 50})
cancelled = client.fine_tuning.jobs.cancel(doomed.id)
assert cancelled.status in ("cancelled", "cancelling"), cancelled.status
report("jobs.cancel", cancelled.status)
listed = [j.id for j in client.fine_tuning.jobs.list(limit=1)]
assert listed[:4] == [doomed.id, transfer.id, nulls.id, legacy.id], listed
report("jobs.list(limit=1) auto-pagination", f"{len(listed)} jobs")
mine = [j.id for j in client.fine_tuning.jobs.list(metadata={"run": TAG})]
assert mine == [legacy.id], mine
report("jobs.list(metadata=…)")

legacy = wait_terminal(legacy.id)
assert legacy.status == "succeeded", legacy.error
report("jobs.retrieve (polled to the end)", legacy.fine_tuned_model)
events = list(client.fine_tuning.jobs.list_events(legacy.id, limit=2))
assert len(events) > 4 and "succeeded" in events[0].message.lower(), [e.message for e in events]
report("jobs.list_events(limit=2) auto-pagination", f"{len(events)} events")
ckpts = list(client.fine_tuning.jobs.checkpoints.list(legacy.id, limit=1))
assert len(ckpts) == 2 and ckpts[0].step_number > ckpts[1].step_number, ckpts
assert ckpts[1].fine_tuned_model_checkpoint == f"{legacy.fine_tuned_model}:ckpt-step-{ckpts[1].step_number}"
report("jobs.checkpoints.list(limit=1) auto-pagination", ckpts[1].fine_tuned_model_checkpoint)

(result_id,) = legacy.result_files
assert client.files.retrieve(result_id).purpose == "fine-tune-results"
csv = client.files.content(result_id).text
header, *rows = csv.strip().split("\n")
assert header == "step,epoch,loss,accuracy,val_loss,val_accuracy" and len(rows) == 2, csv
report("result_files + files.content", f"{len(rows)} rows")
assert client.files.retrieve_content(result_id).strip() == csv.strip()
report("files.retrieve_content (deprecated)")

from_ckpt = client.fine_tuning.jobs.create(
    model=ckpts[1].fine_tuned_model_checkpoint, training_file=up.id, hyperparameters={"n_epochs": 1}
)
assert from_ckpt.model_extra["init_checkpoint"] == ckpts[1].id, from_ckpt
report("jobs.create from a checkpoint name", from_ckpt.model_extra["init_checkpoint"])

for job in (nulls, transfer, from_ckpt):
    assert wait_terminal(job.id).status == "succeeded", job.id
report("jobs finish", "supervised, transfer and from-checkpoint jobs succeeded")
stopped = wait_terminal(doomed.id)
assert stopped.status == "cancelled" and stopped.fine_tuned_model is None
report("cancelled job ends cancelled")

# Pause of a running job: it checkpoints mid-epoch and stops; resume continues from that checkpoint.
pausable = client.fine_tuning.jobs.create(
    model="cnn-small",
    training_file=up.id,
    seed=5,
    method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 8}}},
)
end = time.time() + 120
while client.fine_tuning.jobs.retrieve(pausable.id).status != "running":
    assert time.time() < end, "the job did not start"
    time.sleep(0.1)
pausing = client.fine_tuning.jobs.pause(pausable.id)
reason = pausing.model_extra["status_reason"]
assert pausing.status == "paused" or (pausing.status == "running" and reason == "pausing"), (pausing.status, reason)
end = time.time() + 120
while (job := client.fine_tuning.jobs.retrieve(pausable.id)).status == "running":
    assert time.time() < end, "the pause did not land"
    time.sleep(0.2)
assert job.status == "paused", (job.status, job.error)
mid = client.fine_tuning.jobs.checkpoints.list(pausable.id).data[0]
assert mid.metrics.to_dict().get("mid_epoch") is True, mid.metrics
assert job.model_extra["status_reason"] == f"paused by user at step {mid.step_number}", job.model_extra
report("jobs.pause (running)", f"paused at step {mid.step_number} with a mid-epoch checkpoint")
err = expect_error(openai.ConflictError, lambda: strict.fine_tuning.jobs.pause(legacy.id), "job_not_pausable")
report("409 job_not_pausable", err.code)
err = expect_error(openai.ConflictError, lambda: strict.fine_tuning.jobs.resume(legacy.id), "job_not_paused")
report("409 job_not_paused", err.code)
assert client.fine_tuning.jobs.resume(pausable.id).status == "queued"
job = wait_terminal(pausable.id)
assert job.status == "succeeded", job.error
messages = [e.message for e in client.fine_tuning.jobs.list_events(pausable.id)]
assert f"Job resumed: queued to continue from checkpoint {mid.id} (step {mid.step_number})" in messages, messages
assert any(m.startswith("resumed from the mid-epoch checkpoint of epoch") and m.endswith(f"(step {mid.step_number})") for m in messages), messages
assert sum(m.startswith("Training started") for m in messages) == 1, messages
steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(pausable.id)]
assert mid.step_number in steps and len(steps) == 3, steps
report("jobs.resume (continued)", f"from step {mid.step_number}; checkpoints at steps {sorted(steps)}")

# Models of the project
assert client.models.retrieve(legacy.fine_tuned_model).id == legacy.fine_tuned_model
report("models.retrieve (fine-tuned)")
gone = client.models.delete(legacy.fine_tuned_model)
assert gone.deleted and gone.id == legacy.fine_tuned_model, gone
expect_error(openai.NotFoundError, lambda: strict.models.retrieve(legacy.fine_tuned_model))
report("models.delete")

# Errors, with max_retries=0
err = expect_error(
    openai.BadRequestError,
    lambda: strict.fine_tuning.jobs.create(model="mnist-cnn", training_file="file-doesnotexist"),
    "invalid_training_file",
)
assert err.param == "training_file"
report("400 BadRequestError", err.code)
bad = OpenAI(base_url=BASE, api_key="rk-not-a-key", max_retries=0)
report("401 AuthenticationError", expect_error(openai.AuthenticationError, lambda: bad.models.list()).code)
report(
    "404 NotFoundError",
    expect_error(openai.NotFoundError, lambda: strict.fine_tuning.jobs.retrieve("ftjob-doesnotexist000000000000")).code,
)
retries.retried = retries.told_not_to = 0
# The default client: the SDK would retry a 409 twice, but Refit says x-should-retry: false.
err = expect_error(openai.ConflictError, lambda: client.fine_tuning.jobs.cancel(legacy.id), "job_not_cancellable")
assert retries.retried == 0 and retries.told_not_to == 1, (retries.retried, retries.told_not_to)
report("409 ConflictError (not retried)", err.code)
limited = OpenAI(base_url=BASE, api_key=LIMITED_KEY, max_retries=0)
lf = limited.files.create(file=("d.zip", digits, "application/zip"), purpose="fine-tune")
first = limited.fine_tuning.jobs.create(model="mnist-cnn", training_file=lf.id)
err = expect_error(
    openai.RateLimitError,
    lambda: limited.fine_tuning.jobs.create(model="mnist-cnn", training_file=lf.id),
    "too_many_jobs",
)
assert int(err.response.headers["retry-after"]) > 0
limited.fine_tuning.jobs.cancel(first.id)
report("429 RateLimitError", err.code)
print(json.dumps({"done": True, "version": openai.__version__}), flush=True)
sys.exit(0)
