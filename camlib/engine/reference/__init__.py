"""The reference backends: always applicable (autograd, DeepLIFT by graph rewrite, naive coalitions,
plain network passes). Every fast backend is tested equal to these."""
