"""2-D sine-cosine position embedding of the AIFI encoder layer."""
import torch


def build_2d_sincos_position_embedding(w: int, h: int, hidden_dim: int = 256,
                                       temperature: float = 10000.0,
                                       device=None,
                                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed position embedding of an h x w feature map, shape (1, h*w, hidden_dim),
    tokens in row-major order (as the feature map is flattened).

    Channels are ``[sin(r*omega), cos(r*omega), sin(c*omega), cos(c*omega)]``
    for row r and column c, ``omega_i = temperature ** (-i / (hidden_dim/4))``,
    computed in float64 and returned in ``dtype`` (the neck passes
    :func:`.precision.value_dtype` of its tokens: fp32 under fp16 / bf16
    autocast, as the official code, float64 for a float64 model).

    NOTE: the official code flattens a (w, h) ``meshgrid(..., indexing='ij')``
    while features are flattened (h, w), so on NON-square maps its "rows" and
    "columns" do not follow the pixel grid. We use the consistent row-major
    form, as transformers does; the two are identical on square maps (every
    released checkpoint was trained at 640x640), and ours keeps the geometry
    right when fine-tuning at a non-square IMAGE_SIZE.
    """
    if hidden_dim % 4:
        raise ValueError(f'hidden_dim must be divisible by 4, got {hidden_dim}')
    pos_dim = hidden_dim // 4
    omega = 1.0 / temperature ** (torch.arange(pos_dim, dtype=torch.float64, device=device)
                                  / pos_dim)
    rows, cols = torch.meshgrid(torch.arange(int(h), dtype=torch.float64, device=device),
                                torch.arange(int(w), dtype=torch.float64, device=device),
                                indexing='ij')
    emb_r = rows.flatten()[:, None] * omega[None]
    emb_c = cols.flatten()[:, None] * omega[None]
    pos = torch.cat([emb_r.sin(), emb_r.cos(), emb_c.sin(), emb_c.cos()], dim=1)
    return pos.to(dtype)[None]
