"""BibTeX of the papers the zoo's checkpoints implement, found by their arXiv ids.

A pretrained table names its paper in words ending with its arXiv id; a card cites it with
:func:`bibtex`.
"""

from __future__ import annotations

import re

__all__ = ["bibtex"]

_BIB = {
    "1806.07366": """@inproceedings{chen2018neural,
  title={Neural Ordinary Differential Equations},
  author={Chen, Ricky T. Q. and Rubanova, Yulia and Bettencourt, Jesse and Duvenaud, David},
  booktitle={Advances in Neural Information Processing Systems},
  year={2018}
}""",
    "1810.01367": """@inproceedings{grathwohl2019ffjord,
  title={FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models},
  author={Grathwohl, Will and Chen, Ricky T. Q. and Bettencourt, Jesse and Sutskever, Ilya and
    Duvenaud, David},
  booktitle={International Conference on Learning Representations},
  year={2019}
}""",
    "1606.01865": """@article{che2018recurrent,
  title={Recurrent Neural Networks for Multivariate Time Series with Missing Values},
  author={Che, Zhengping and Purushotham, Sanjay and Cho, Kyunghyun and Sontag, David and
    Liu, Yan},
  journal={Scientific Reports},
  volume={8},
  pages={6085},
  year={2018}
}""",
    "1907.03907": """@inproceedings{rubanova2019latent,
  title={Latent Ordinary Differential Equations for Irregularly-Sampled Time Series},
  author={Rubanova, Yulia and Chen, Ricky T. Q. and Duvenaud, David},
  booktitle={Advances in Neural Information Processing Systems},
  year={2019}
}""",
    "1909.01377": """@inproceedings{bai2019deep,
  title={Deep Equilibrium Models},
  author={Bai, Shaojie and Kolter, J. Zico and Koltun, Vladlen},
  booktitle={Advances in Neural Information Processing Systems},
  year={2019}
}""",
    "2006.08656": """@inproceedings{bai2020multiscale,
  title={Multiscale Deep Equilibrium Models},
  author={Bai, Shaojie and Koltun, Vladlen and Kolter, J. Zico},
  booktitle={Advances in Neural Information Processing Systems},
  year={2020}
}""",
    "2002.02798": """@inproceedings{finlay2020train,
  title={How to Train Your Neural {ODE}: the World of {J}acobian and Kinetic Regularization},
  author={Finlay, Chris and Jacobsen, J{\\"o}rn-Henrik and Nurbekyan, Levon and Oberman, Adam},
  booktitle={International Conference on Machine Learning},
  year={2020}
}""",
    "2210.02747": """@inproceedings{lipman2023flow,
  title={Flow Matching for Generative Modeling},
  author={Lipman, Yaron and Chen, Ricky T. Q. and Ben-Hamu, Heli and Nickel, Maximilian and
    Le, Matt},
  booktitle={International Conference on Learning Representations},
  year={2023}
}""",
    "2302.00482": """@article{tong2024improving,
  title={Improving and Generalizing Flow-Based Generative Models with Minibatch Optimal
    Transport},
  author={Tong, Alexander and Fatras, Kilian and Malkin, Nikolay and Huguet, Guillaume and
    Zhang, Yanlei and Rector-Brooks, Jarrid and Wolf, Guy and Bengio, Yoshua},
  journal={Transactions on Machine Learning Research},
  year={2024}
}""",
}


def bibtex(text: str) -> list[str]:
    """The BibTeX entries of the arXiv ids named in ``text``, in order (unknown ids skipped).

    Example:
        >>> bibtex("Bai, Kolter, Koltun. Deep Equilibrium Models. arXiv:1909.01377")[0][:24]
        '@inproceedings{bai2019de'
    """
    ids = re.findall(r"arXiv:(\d{4}\.\d{4,5})", text or "")
    return [_BIB[i] for i in dict.fromkeys(ids) if i in _BIB]
