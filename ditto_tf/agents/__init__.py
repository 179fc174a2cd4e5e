"""Agents trained offline from expert episodes (paper sections 3-4, appendix C).

DITTO (`ditto.py`) and D-GAIL (`dgail.py`) train the shared actor-critic (`actor_critic.py`) on
imagined rollouts in the world model; D-BC (`dbc.py`) clones the expert on latent states; BC
(`bc.py`) clones it on pixels. `latents.py` encodes and caches the expert's latent states,
`runner.py` resumes an agent into the shared loop of `ditto_tf/training.py`, and `policy.py` turns a checkpoint into a policy that
acts in the true environment.
"""
