from .functional import (attention_config, qk_channel_attention, qk_token_attention, spike_driven_attention,
                         spiking_self_attention)

__all__ = ["qk_token_attention", "qk_channel_attention", "spike_driven_attention", "spiking_self_attention",
           "attention_config"]
