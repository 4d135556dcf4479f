"""effv2's Hydra launchers. Hydra instantiates a launcher only from the ``hydra_plugins``
namespace package, so the class lives here rather than in ``effv2/``; it imports effv2 for the
rest."""
