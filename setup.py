"""Installs mixnas_tf: `pip install -e .[test]`."""
import setuptools

setuptools.setup(
    name="mixnas_tf",
    version="0.1.2",
    description=(
        "Search where a CNN should downsample with a balanced mixture of "
        "SuperNets (Keras 3 / TensorFlow)."
    ),
    packages=setuptools.find_packages(include=["mixnas_tf", "mixnas_tf.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.3",
        "tensorflow-datasets>=4.9",
        # tensorflow-datasets imports importlib_resources without declaring it
        # for Python >= 3.9 (tensorflow/datasets#11212).
        "importlib_resources",
        "keras-tuner>=1.4",
        # tf.summary (the loop's TensorBoard scalars) needs it; TF 2.21 no longer
        # installs it as a dependency.
        "tensorboard",
        "absl-py",
        "numpy",
        "scipy",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist"],
        # KerasTuner's BayesianOptimization needs scikit-learn.
        "bayesian": ["scikit-learn"],
    },
)
