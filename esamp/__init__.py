"""ESamp: an online latent distiller and a post-filter fused-logit sampler.
`import esamp.runtime` binds the shims and subscribes ESamp to the hook points."""
