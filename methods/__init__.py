"""Fine-tuning methods: one module each, found through ``methods.registry``."""
import logging

# bitsandbytes (pulled in by galore-torch, imported by peft) warns on every import about an
# optional CPU kernel package from the hub; it is irrelevant to every method here.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

import warnings

# peft still calls a transformers property that transformers 5 deprecates; not the user's concern
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
