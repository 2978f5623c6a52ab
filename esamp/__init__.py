"""ESamp: online latent distiller and post-filter fused-logit sampler.

Empty until the runtime lands; `import esamp.runtime` will apply the shims.
"""
