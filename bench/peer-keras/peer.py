# Keras side of bench/peer-keras.ts: the same measurements on the same libtensorflow (the tensorflow-cpu wheel
# whose libtensorflow tfjs-node is built against), from the venv that bench creates. Prints one JSON object.
#   peer.py mobilenet [--batch 32 --batches 5]
#   peer.py mnist-transfer --idx DIR [--epochs 5 --batch 128]
#   peer.py cnn-small --idx DIR [--epochs 3 --batch 128 --samples 10000]
#   peer.py saved-model --dir EXPORT --inputs X.f32 --eager P.f32   (a Refit SavedModel export vs TF.js eager)
import json
import os
import struct
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402


def arg(name, default):
    if name in sys.argv:
        return type(default)(sys.argv[sys.argv.index(name) + 1]) if default is not None else sys.argv[sys.argv.index(name) + 1]
    return default


def threads():
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    nd = data[3]
    dims = struct.unpack(">" + "I" * nd, data[4 : 4 + 4 * nd])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


def mnist(idx_dir, split, digits, limit=None):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(idx_dir, f"{prefix}-images-idx3-ubyte"))
    y = read_idx(os.path.join(idx_dir, f"{prefix}-labels-idx1-ubyte"))
    keep = np.isin(y, digits)
    x, y = x[keep], y[keep]
    if limit:
        x, y = x[:limit], y[:limit]
    remap = {d: i for i, d in enumerate(digits)}
    return (x.astype("float32") / 255.0)[..., None], np.array([remap[v] for v in y], dtype="int64")


def mobilenet():
    batch = arg("--batch", 32)
    batches = arg("--batches", 5)
    # the backbone up to the pooled 1280-d features (Refit's feature layer flatten_1 after a 7x7 average pool)
    model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=None, pooling="avg")
    x = tf.random.uniform((batch, 224, 224, 3))
    fn = tf.function(lambda t: model(t, training=False))
    fn(x).numpy()  # trace + warm up
    fn(x).numpy()
    t0 = time.perf_counter()
    for _ in range(batches):
        fn(x).numpy()
    graph_ms = (time.perf_counter() - t0) * 1000 / (batches * batch)
    model(x, training=False).numpy()
    t0 = time.perf_counter()
    for _ in range(2):
        model(x, training=False).numpy()
    eager_ms = (time.perf_counter() - t0) * 1000 / (2 * batch)
    return {"batch": batch, "tf_function_ms_per_image": graph_ms, "eager_ms_per_image": eager_ms}


def mnist_cnn_layers(num_classes):
    # Keras examples/mnist_transfer_cnn.py: feature layers (frozen in the transfer step) + classification layers
    feature = [
        layers.Conv2D(32, 3, padding="valid", input_shape=(28, 28, 1)),
        layers.Activation("relu"),
        layers.Conv2D(32, 3),
        layers.Activation("relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Flatten(),
    ]
    classification = [
        layers.Dense(128),
        layers.Activation("relu"),
        layers.Dropout(0.5),
        layers.Dense(num_classes),
        layers.Activation("softmax"),
    ]
    return feature, classification


def mnist_transfer():
    idx = arg("--idx", None)
    epochs = arg("--epochs", 5)
    batch = arg("--batch", 128)
    # the base: trained on 0-4 once (not timed; Refit's mnist-cnn is pretrained too)
    feature, classification = mnist_cnn_layers(5)
    model = keras.Sequential(feature + classification)
    x0, y0 = mnist(idx, "train", [0, 1, 2, 3, 4], 5000)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adadelta", metrics=["accuracy"])
    model.fit(x0, y0, batch_size=128, epochs=1, verbose=0)
    # timed: load the IDX arrays of 5-9 -> end of fit with frozen feature layers (Refit: POST job -> succeeded)
    t0 = time.perf_counter()
    x, y = mnist(idx, "train", [5, 6, 7, 8, 9])
    for layer in feature:
        layer.trainable = False
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, validation_split=0.1)
    wall = time.perf_counter() - t0
    xt, yt = mnist(idx, "test", [5, 6, 7, 8, 9])
    _, acc = model.evaluate(xt, yt, verbose=0)
    return {"train_samples": int(len(x)), "epochs": epochs, "batch": batch, "wall_s": wall, "test_accuracy": float(acc),
            "val_accuracy": float(history.history["val_accuracy"][-1])}


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.t0)


def cnn_small():
    idx = arg("--idx", None)
    epochs = arg("--epochs", 3)
    batch = arg("--batch", 128)
    samples = arg("--samples", 10000)
    x, y = mnist(idx, "train", list(range(10)), samples)
    # Refit's cnn-small preset (src/engine/architectures.ts)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dropout(0.3),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    timer = EpochTimer()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer], shuffle=True)
    steady = timer.times[1:]
    return {"samples": int(len(x)), "batch": batch, "epochs": epochs, "epoch_s": timer.times,
            "samples_per_second": len(x) * len(steady) / sum(steady)}


def saved_model():
    # A Refit export (GET /v1/models/{id}/content?format=saved_model, unzipped): load it the way Python users
    # do, call serving_default with the signature's input name from metadata.json on real preprocessed inputs
    # (float32, row-major, written by the Node side), compare with the eager TF.js probabilities.
    export = arg("--dir", None)
    with open(os.path.join(export, "metadata.json")) as f:
        meta = json.load(f)["saved_model"]
    inp, outp = meta["inputs"][0], meta["outputs"][0]
    x = np.fromfile(arg("--inputs", None), dtype="<f4").reshape([-1, *inp["shape"][1:]])
    eager = np.fromfile(arg("--eager", None), dtype="<f4").reshape([-1, *outp["shape"][1:]])
    t0 = time.perf_counter()
    loaded = tf.saved_model.load(export, tags=meta["tags"])
    fn = loaded.signatures[meta["signature"]]
    load_ms = (time.perf_counter() - t0) * 1000
    t1 = time.perf_counter()
    got = fn(**{inp["name"]: tf.constant(x)})[outp["name"]].numpy()
    call_ms = (time.perf_counter() - t1) * 1000
    diff = float(np.max(np.abs(got - eager)))
    tolerance = 1e-4 * max(1.0, float(np.max(np.abs(eager))))
    return {"rows": int(len(x)), "max_diff": diff, "tolerance": tolerance, "ok": diff <= tolerance,
            "argmax_agree": int(np.sum(np.argmax(got, -1) == np.argmax(eager, -1))),
            "signature_inputs": {k: str(v) for k, v in fn.structured_input_signature[1].items()},
            "load_ms": round(load_ms, 1), "call_ms": round(call_ms, 1)}


if __name__ == "__main__":
    which = sys.argv[1]
    out = {"mobilenet": mobilenet, "mnist-transfer": mnist_transfer, "cnn-small": cnn_small,
           "saved-model": saved_model}[which]()
    out["threads"] = threads()
    print(json.dumps(out))
