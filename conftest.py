"""Test settings for unit tests AND notebooks (nbval kernels inherit this environment): the smoke
preset, no hub, and a fresh artifacts folder for the whole run."""
import atexit
import os
import shutil
import tempfile

os.environ["RLHF_PRESET"] = "smoke"
os.environ["HF_HUB_OFFLINE"] = "1"
# every worked solution (%%solution cells) runs under nbval, so none can rot; a learner's kernel has it off
os.environ["RLHF_RUN_SOLUTIONS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not os.environ.get("RLHF_TEST_KEEP_HOME"):
    os.environ["RLHF_HOME"] = tempfile.mkdtemp(prefix="rlhf-test-home-")
    # removed when pytest exits (its nbval kernels have ended by then)
    atexit.register(shutil.rmtree, os.environ["RLHF_HOME"], ignore_errors=True)
